"""A JSON-array data file that is not UTF-8 fails in one line naming the file, line, record and byte
offset (not a bare UnicodeDecodeError); the records before the bad byte are read as usual."""

from __future__ import annotations

import json

import pytest

from mof_llava.data import record_file
from mof_llava.data.records import RecordError


def _record(i: int, text: str) -> dict:
    return {"id": str(i), "conversations": [{"from": "human", "value": text}, {"from": "gpt", "value": "ok"}]}


def _array_with_bad_byte(n_before: int) -> tuple[bytes, int, int]:
    """A JSON array whose record `n_before` holds a Latin-1 é (0xE9), with `n_before` valid records before
    it, some of them with multi-byte UTF-8 text. Returns the bytes, the bad byte's offset and its line."""
    good = [json.dumps(_record(i, f"naïve café {i} ✓"), ensure_ascii=False) for i in range(n_before)]
    bad = json.dumps(_record(n_before, "caf@")).replace("@", "\0")
    text = "[\n" + ",\n".join([*good, bad]) + "\n]\n"
    data = text.encode("utf-8").replace(b"\0", b"\xe9")
    offset = data.index(b"\xe9")
    return data, offset, data[:offset].count(b"\n") + 1


@pytest.mark.parametrize("chunk_chars", [1 << 20, 7, 64])  # one read; reads cutting characters and records
@pytest.mark.parametrize("n_before", [0, 1, 5])
def test_non_utf8_array_names_file_record_and_byte(tmp_path, monkeypatch, chunk_chars, n_before):
    monkeypatch.setattr(record_file, "_CHUNK_CHARS", chunk_chars)
    data, offset, line = _array_with_bad_byte(n_before)
    path = tmp_path / "data.json"
    path.write_bytes(data)
    # the records before the bad one are still found where they are
    scanned = []
    with pytest.raises(RecordError) as err:
        for item in record_file.scan_file(path):
            scanned.append(item)
    assert str(err.value) == (
        f"{path}:{line}: not a valid JSON array: record {n_before}: not UTF-8 text (byte {offset})"
    )
    assert [value["id"] for *_, value in scanned] == [str(i) for i in range(n_before)]
    for start, size, _, value in scanned:
        assert json.loads(data[start : start + size]) == value


def test_training_and_data_check_see_the_same_line(tmp_path):
    data, offset, _ = _array_with_bad_byte(2)
    path = tmp_path / "data.json"
    path.write_bytes(data)
    with pytest.raises(RecordError, match=rf"data.json:\d+: not a valid JSON array: record 2: not UTF-8 text \(byte {offset}\)$"):
        record_file.RecordFile(path, cache_dir=tmp_path / "cache")
