"""typed_config: pydantic validation of the config dataclasses, with errors naming the key and the file
(or command-line override) its value came from; the one YAML reader; the resolved config round trip."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from mof_llava.commands.dataclass_args import add_arguments, from_args
from mof_llava.data.config import DataConfig
from mof_llava.experiments.spec import SweepError, load_sweep
from mof_llava.model.builder import TowerRecipe
from mof_llava.model.configuration import MixerSpec
from mof_llava.options import option
from mof_llava.training.config import LoraConfig, RunConfig, load_run_config
from mof_llava.typed_config import ConfigError, dump_yaml, read_config, validate


def _write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


TOWERS = [{"name": "clip", "path": "c"}, {"name": "dinov2", "path": "d", "feature_layer": -1}]


def test_a_nested_wrong_type_names_the_key_and_the_file_that_set_it(tmp_path):
    towers = [TOWERS[0], {**TOWERS[1], "feature_layer": "last"}]
    base = _write(
        tmp_path / "base.yaml", {"model": {"llm": "v", "towers": towers}, "data": {"data_path": "d.json"}}
    )
    child = _write(tmp_path / "child.yaml", {"inherit": "base.yaml", "train": {"seed": 3}})
    with pytest.raises(ConfigError) as err:
        load_run_config(child)
    assert str(err.value) == f"{base.resolve()}: model.towers[1].feature_layer: expected int, got 'last'"
    assert err.value.key == "model.towers[1].feature_layer"


def test_a_wrong_override_is_named_as_the_override(tmp_path):
    path = _write(
        tmp_path / "run.yaml",
        {
            "model": {"llm": "v", "towers": TOWERS, "mixer": {"mode": "interleave"}},
            "data": {"data_path": "d.json"},
        },
    )
    with pytest.raises(ConfigError) as err:
        load_run_config(path, ["model.mixer.grid=[3, three]"])
    assert str(err.value) == (
        "the override `model.mixer.grid=[3, three]` on the command line: "
        "model.mixer.grid[1]: expected int, got 'three'"
    )
    with pytest.raises(
        ConfigError,
        match=r"^the override `data.on_bad_image=retry` on the command line: "
        r"data.on_bad_image: must be one of \['fail', 'skip'\], got 'retry'$",
    ):
        load_run_config(path, ["data.on_bad_image=retry"])


def test_an_unknown_key_in_an_inherited_file_names_that_file(tmp_path):
    base = _write(tmp_path / "base.yaml", {"data": {"data_path": "d.json", "max_lenght": 4096}})
    child = _write(tmp_path / "child.yaml", {"inherit": "base.yaml", "data": {"max_length": 1024}})
    with pytest.raises(ConfigError) as err:
        load_run_config(child)
    assert str(err.value).startswith(f"{base.resolve()}: data: unknown keys ['max_lenght']; known: [")
    # a tower's typo, deeper down, inside a list
    _write(
        tmp_path / "base.yaml",
        {
            "model": {"llm": "v", "towers": [TOWERS[0], {**TOWERS[1], "layer": 1}]},
            "data": {"data_path": "d.json"},
        },
    )
    with pytest.raises(ConfigError, match=rf"^{base.resolve()}: model.towers\[1\]: unknown keys \['layer'\]"):
        load_run_config(child)


def test_a_dataclass_own_check_blames_the_file_of_the_key_it_names(tmp_path):
    # the sentence names packing_tokens (set by the inherited file) before max_length (left default)
    base = _write(tmp_path / "base.yaml", {"data": {"data_path": "d.json", "packing_tokens": 100}})
    child = _write(tmp_path / "child.yaml", {"inherit": "base.yaml", "data": {"packing": True}})
    with pytest.raises(ConfigError) as err:
        load_run_config(child)
    assert str(err.value) == (
        f"{base.resolve()}: data: data.packing_tokens = 100 is below data.max_length (2048): "
        "a sample could not fit"
    )


def test_2e_5_without_a_dot_is_read_as_a_float(tmp_path):
    text = "data: {data_path: d.json}\ntrain: {learning_rate: 2e-5, adapter_learning_rate: 1e-3}\n"
    assert yaml.safe_load(text)["train"]["learning_rate"] == "2e-5"  # YAML 1.1 leaves it a string
    (tmp_path / "run.yaml").write_text(text)
    train = load_run_config(tmp_path / "run.yaml", ["train.warmup_ratio=3e-2"]).train
    assert (train.learning_rate, train.adapter_learning_rate, train.warmup_ratio) == (2e-5, 1e-3, 0.03)
    assert all(
        type(v) is float for v in (train.learning_rate, train.adapter_learning_rate, train.warmup_ratio)
    )


def test_the_saved_resolved_config_validates_back_to_an_equal_object(tmp_path):
    path = _write(
        tmp_path / "run.yaml",
        {
            "model": {"llm": "v", "towers": TOWERS, "mixer": {"mode": "interleave", "grid": [4, 4]}},
            "data": {"data_path": "d.json", "packing": True, "packing_tokens": 4096},
            "train": {
                "stage": "pretrain",
                "lora": {"r": 8, "target_modules": ["q_proj", "v_proj"]},
                "seed": 7,
            },
        },
    )
    config = load_run_config(path)
    assert config.model.mixer.grid == (4, 4) and config.train.lora == LoraConfig(
        r=8, target_modules=["q_proj", "v_proj"]
    )
    assert config.model.towers[1] == TowerRecipe("dinov2", "d", feature_layer=-1)
    assert config.data.template == "plain"  # the stage's default, saved resolved
    again = validate(RunConfig, yaml.safe_load(dump_yaml(config)))
    assert again == config and again.model.mixer == MixerSpec(mode="interleave", grid=(4, 4))


def test_range_checks_and_choices_of_code_built_configs_use_the_same_rules():
    with pytest.raises(ConfigError, match=r"^data.max_length must be positive, got -3$"):
        DataConfig("x.json", max_length=-3)
    with pytest.raises(ConfigError, match=r"^data.packing_tokens must be int, got 'many'$"):
        DataConfig("x.json", packing=True, packing_tokens="many")
    # read from a mapping, by the same bound
    with pytest.raises(ConfigError, match=r"^max_length must be positive, got -3$"):
        validate(DataConfig, {"data_path": "x.json", "max_length": -3}, what="data settings")


def test_a_value_no_member_of_a_union_takes(tmp_path):
    path = _write(
        tmp_path / "run.yaml", {"data": {"data_path": "d.json"}, "train": {"lora": {"target_modules": 5}}}
    )
    with pytest.raises(
        ConfigError, match=rf"^{path}: train.lora.target_modules: 5 fits none of \['list\[str\]', 'str'\]$"
    ):
        load_run_config(path)


def test_reader_resolves_relative_keys_against_the_file_that_names_them(tmp_path):
    (tmp_path / "shared").mkdir()
    _write(tmp_path / "shared" / "base.yaml", {"train": {"deepspeed": "zero2.json"}})
    child = _write(tmp_path / "child.yaml", {"inherit": "shared/base.yaml"})
    origins: dict = {}
    raw = read_config(child, ["train.seed=1"], origins, relative_keys=(("train", "deepspeed"),))
    assert raw["train"] == {"deepspeed": str(tmp_path / "shared" / "zero2.json"), "seed": 1}
    assert origins == {
        ("train", "deepspeed"): str((tmp_path / "shared" / "base.yaml").resolve()),
        ("train", "seed"): "the override `train.seed=1` on the command line",
    }


def test_sweep_launch_settings_are_checked_naming_the_file_and_key(tmp_path):
    arms = {"a": {"stage1": "s1.yaml", "stage2": "s2.yaml"}}
    path = _write(tmp_path / "sweep.yaml", {"arms": arms, "launch": {"nodes": 0}})
    with pytest.raises(SweepError, match=rf"^{path}: launch: launch.nodes must be at least 1, got 0$"):
        load_sweep(path)
    _write(path, {"arms": arms, "launch": {"slurm": {"time": {"stage3": "1:00:00"}}}})
    with pytest.raises(
        SweepError, match=rf"^{path}: launch.slurm.time.stage3: must be one of \['stage1', 'stage2', 'eval'\]"
    ):
        load_sweep(path)
    _write(
        path, {"arms": arms, "launch": {"setup": "module load cuda", "slurm": {"time": {"eval": "01:00:00"}}}}
    )
    launch = load_sweep(path).launch
    assert launch.setup == ("module load cuda",)
    assert launch.slurm.time == {"stage1": "12:00:00", "stage2": "48:00:00", "eval": "01:00:00"}


@dataclasses.dataclass
class _Flags:
    count: int = option(2, "how many", actions=frozenset({"run"}))
    rate: float | None = option(None, "a rate", actions=frozenset({"run"}))
    where: Path | None = option(None, "a folder", actions=frozenset({"run"}))


def test_generated_flags_convert_through_the_same_validation(capsys):
    parser = argparse.ArgumentParser(prog="p")
    add_arguments(parser, _Flags, "run")
    flags = from_args(_Flags, parser.parse_args(["--count", "3", "--rate", "2e-5", "--where", "out"]))
    assert flags == _Flags(count=3, rate=2e-5, where=Path("out"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--count", "three"])
    assert "argument --count: expected int, got 'three'" in capsys.readouterr().err


@dataclasses.dataclass(frozen=True)
class _Repeated:
    sizes: tuple[int, ...] = option((4,), "a size (repeatable)", actions=frozenset({"run"}), metavar="N")
    names: tuple[str, ...] | None = option(None, "a name", actions=frozenset({"run"}), flag="--name")


def test_a_tuple_field_is_a_repeatable_flag_of_typed_items(capsys):
    parser = argparse.ArgumentParser(prog="p")
    add_arguments(parser, _Repeated, "run")
    given = from_args(
        _Repeated, parser.parse_args(["--sizes", "1", "--name", "a", "--sizes", "2", "--name", "b"])
    )
    assert given == _Repeated(sizes=(1, 2), names=("a", "b"))
    assert from_args(_Repeated, parser.parse_args([])) == _Repeated()  # absent: the field's default
    assert "--sizes N" in parser.format_help() and "--names" not in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--sizes", "x"])
    assert "argument --sizes: expected int, got 'x'" in capsys.readouterr().err
