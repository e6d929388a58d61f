"""Atomic writes: the previous file survives a failed write, nothing temporary is left behind, and the
result has the permissions any other new file would have."""

from __future__ import annotations

import os
import stat

import pytest

from mof_llava.atomic import atomic_path, write_json_atomic, write_text_atomic


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    out = tmp_path / "sub" / "answers.jsonl"
    write_text_atomic(out, "old\n")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["answers.jsonl"]
    write_json_atomic(out, {"a": 1})
    assert out.read_text() == '{"a": 1}'


def test_temporary_files_are_unique_and_permissions_normal(tmp_path):
    out = tmp_path / "metrics.json"
    with atomic_path(out) as first, atomic_path(out) as second:
        assert first != second and first.parent == second.parent == tmp_path
        first.write_text("1")
        second.write_text("2")
    plain = tmp_path / "plain"
    plain.write_text("x")
    assert out.read_text() == "1"  # the outer block ends last
    assert stat.S_IMODE(os.stat(out).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
