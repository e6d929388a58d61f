"""NAME=VALUE flags (`eval analyze --mllm/--clip`, `mine embed --tower/--pooling`) share one parser;
each keeps its own one-line message for an item that is not NAME=VALUE."""

from __future__ import annotations

import pytest

from mof_llava.cli import main as cli
from mof_llava.commands.dataclass_args import name_values


@pytest.mark.parametrize("item", ["llava", "=m.json", "llava="])
def test_eval_analyze_names_a_malformed_mllm_item(tmp_path, item):
    argv = ["eval", "analyze", "--patterns", str(tmp_path / "p.csv"), "--mllm", item, "--output-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match=rf"^--mllm takes NAME=PATH, got '{item}'$"):
        cli(argv)


def test_mine_embed_names_a_malformed_tower_item(tmp_path):
    with pytest.raises(SystemExit, match=r"^--tower 'clip': expected NAME=VALUE$"):
        cli(["mine", "embed", str(tmp_path), "-o", str(tmp_path / "emb"), "--tower", "clip"])


def test_values_keep_their_equals_signs_and_order():
    # Only the first '=' separates: a path or pooling value may contain more.
    assert list(name_values(["b=x=1", "a=/p"], "--f").items()) == [("b", "x=1"), ("a", "/p")]
    with pytest.raises(SystemExit, match=r"^--f 'a=2': a is already given as a=1$"):
        name_values(["a=1", "a=2"], "--f")


def test_eval_analyze_refuses_a_model_named_twice(tmp_path):
    # the second file would silently replace the first in the comparison
    argv = ["eval", "analyze", "--patterns", str(tmp_path / "p.csv"), "--mllm", "a=1.json", "--mllm", "a=2.json",
            "--output-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match=r"^--mllm 'a=2.json': a is already given as a=1.json$"):
        cli(argv)
