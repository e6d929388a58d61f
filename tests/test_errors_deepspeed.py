"""The DeepSpeed JSON of a run is checked before DeepSpeed reads it: a syntax error names the file,
line and column; a misspelt top-level key (which DeepSpeed would silently ignore) names the file
and the key, with the likely meant one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mof_llava.training.config import ConfigError, TrainConfig
from mof_llava.training.deepspeed_config import (
    DEEPSPEED_TOP_LEVEL_KEYS,
    check_deepspeed_config,
    read_deepspeed_config,
)

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "configs" / "deepspeed").glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_pass(path):
    assert read_deepspeed_config(path) == json.loads(path.read_text())


def test_syntax_error_names_file_line_and_column(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text('{\n  "zero_optimization": {"stage": 2,}\n}\n')  # the "}" after a trailing comma: line 2, column 36
    with pytest.raises(ConfigError) as err:
        read_deepspeed_config(path)
    assert str(err.value) == (
        f"train.deepspeed: {path}:2:36: not valid JSON: Expecting property name enclosed in double quotes"
    )


def test_misspelt_key_is_named_with_the_meant_one(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": "auto", "zero_optimisation": {"stage": 3}}))
    with pytest.raises(ConfigError) as err:
        read_deepspeed_config(path)
    assert str(err.value) == (
        f"train.deepspeed: {path}: unknown top-level key 'zero_optimisation' (DeepSpeed would ignore it); "
        "did you mean 'zero_optimization'?"
    )


def test_other_mistakes_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^train.deepspeed: .*nope.json not found"):
        read_deepspeed_config(tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"list.json: expected a JSON object, got list$"):
        read_deepspeed_config(tmp_path / "list.json")
    latin1 = b'{"wandb": {"project": "caf\xe9"}}'
    (tmp_path / "latin1.json").write_bytes(latin1)
    with pytest.raises(ConfigError, match=rf"latin1.json:1: not UTF-8 text \(byte {latin1.index(0xE9)}: invalid continuation byte\)$"):
        read_deepspeed_config(tmp_path / "latin1.json")
    (tmp_path / "sched.json").write_text('{"scheduler": {"type": "WarmupLR"}}')
    with pytest.raises(ConfigError, match="defines a scheduler, which would replace train.lr_scheduler"):
        check_deepspeed_config(TrainConfig(deepspeed=str(tmp_path / "sched.json")))


def test_key_list_covers_what_deepspeed_reads():
    """Every top-level key DeepSpeed's config parser looks up is in our list (so no valid file is
    refused), found by letting the parser read an empty config that records each lookup."""
    from deepspeed.runtime.config import DeepSpeedConfig

    seen: set[str] = set()

    class Recording(dict):
        def get(self, key, default=None):
            seen.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            seen.add(key)
            return super().__getitem__(key)

        def __contains__(self, key):
            seen.add(key)
            return super().__contains__(key)

        def keys(self):
            return self  # `key in d.keys()` is recorded too

    config = DeepSpeedConfig.__new__(DeepSpeedConfig)
    config._param_dict = Recording()
    config._initialize_params(config._param_dict)
    assert len(seen) > 40
    assert seen <= DEEPSPEED_TOP_LEVEL_KEYS, sorted(seen - DEEPSPEED_TOP_LEVEL_KEYS)
