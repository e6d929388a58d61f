"""Run configs: inheritance, overrides, strict keys, stage defaults, and the global-batch rule."""

from pathlib import Path

import pytest
import yaml

from mof_llava.training.config import ConfigError, load_run_config
from mof_llava.training.run import gradient_accumulation_steps


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_inheritance_and_overrides(tmp_path):
    _write(tmp_path / "base.yaml", {
        "model": {"llm": "vicuna", "towers": [{"name": "clip", "path": "clip-336"}], "mixer": {"mode": "none"}},
        "data": {"data_path": "mix665k.json"},
        "train": {"stage": "finetune", "learning_rate": 2e-5, "global_batch_size": 128},
    })
    _write(tmp_path / "child.yaml", {
        "inherit": "base.yaml",
        "model": {"towers": [{"name": "clip", "path": "clip-336"}, {"name": "dinov2", "path": "dino", "feature_layer": -1}],
                  "mixer": {"mode": "additive", "alpha": 0.75}},
        "train": {"output_dir": "runs/amof-075"},
    })
    config = load_run_config(tmp_path / "child.yaml", ["train.learning_rate=1e-5", "model.mixer.alpha=0.875"])
    assert config.model.llm == "vicuna"  # inherited
    assert [t.name for t in config.model.towers] == ["clip", "dinov2"]  # lists are replaced, not merged
    assert config.model.mixer.mode == "additive" and config.model.mixer.alpha == 0.875
    assert config.train.learning_rate == 1e-5 and config.train.global_batch_size == 128
    assert config.name == "amof-075"
    # stage-2 defaults of LLaVA-1.5 fill what the files leave out
    assert (config.data.template, config.data.image_aspect_ratio, config.data.group_by_modality_length) == (
        "vicuna_v1", "pad", True)


def test_stage1_defaults_are_llava_pretraining():
    from mof_llava.training.config import run_config_from_dict

    config = run_config_from_dict({"data": {"data_path": "558k.json"}, "train": {"stage": "pretrain"}})
    assert (config.data.template, config.data.image_aspect_ratio) == ("plain", "crop")


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        ({"train": {"learnin_rate": 1}}, [], r"child.yaml: train: unknown keys \['learnin_rate'\]"),
        ({}, ["train.stage=stage2"], r"train.stage: must be one of \['pretrain', 'finetune', 'preference'\], got 'stage2'"),
        ({}, ["train.per_device_batch_size=two"], r"train.per_device_batch_size: expected int, got 'two'"),
        ({}, ["learning_rate"], "expected key=value"),
        ({"model": {"mixer": {"mode": "interleave", "alfa": 1}}}, [], r"model.mixer: unknown keys \['alfa'\]"),
        ({"data": {"image_aspect_ratio": "square"}}, [], "LLaVA's 'square', resize and centre-crop, is 'crop' here"),
        ({"extra": 1}, [], r"unknown top-level keys \['extra'\]"),
        ({}, ["train.warmup_ratio=100"], r"train: train.warmup_ratio must be in \[0, 1\) \(a share of the steps\), got 100"),
    ],
)
def test_mistakes_fail_naming_the_key(tmp_path, content, overrides, message):
    base = {"data": {"data_path": "d.json"}}
    for section, values in content.items():
        base[section] = {**base.get(section, {}), **values} if isinstance(values, dict) else values
    _write(tmp_path / "child.yaml", base)
    with pytest.raises(ConfigError, match=message):
        load_run_config(tmp_path / "child.yaml", overrides)


def test_missing_file_and_cycles(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_run_config(tmp_path / "nope.yaml")
    _write(tmp_path / "a.yaml", {"inherit": "b.yaml"})
    _write(tmp_path / "b.yaml", {"inherit": "a.yaml"})
    with pytest.raises(ConfigError, match="inheritance cycle"):
        load_run_config(tmp_path / "a.yaml")


def test_gradient_accumulation_is_derived_or_refused():
    assert gradient_accumulation_steps(256, 32, 8) == 1
    assert gradient_accumulation_steps(128, 4, 8) == 4
    assert gradient_accumulation_steps(128, 16, 2) == 4
    with pytest.raises(ConfigError, match="global_batch_size=128 is not a multiple of per_device_batch_size=12 x 8 device"):
        gradient_accumulation_steps(128, 12, 8)


def test_resolved_config_round_trips(tmp_path):
    from mof_llava.model.builder import TowerRecipe
    from mof_llava.model.configuration import MixerSpec

    _write(tmp_path / "run.yaml", {
        "model": {"llm": "vicuna", "towers": [{"name": "clip", "path": "c"}, {"name": "dinov2", "path": "d",
                                                                              "feature_layer": -1}]},
        "data": {"data_path": "d.json"},
        "train": {"output_dir": "runs/x"},
    })
    config = load_run_config(tmp_path / "run.yaml", ["model.mixer={mode: interleave, grid: [3, 3]}"])
    assert config.model.mixer == MixerSpec(mode="interleave", grid=(3, 3))
    assert config.model.towers[1] == TowerRecipe("dinov2", "d", feature_layer=-1)
    config.save(tmp_path / "resolved.yaml")
    assert load_run_config(tmp_path / "resolved.yaml") == config
    assert config.model.recipe().mixer.grid == (3, 3)


def test_continuing_a_run_with_other_settings_is_refused_but_not_for_cache_settings(tmp_path):
    from dataclasses import replace

    from mof_llava.training.config import run_config_from_dict
    from mof_llava.training.run import _check_resumable_config

    out = tmp_path / "run"
    config = run_config_from_dict({"data": {"data_path": "d.json"}, "train": {"output_dir": str(out)}})
    config.save(out / "run_config.yaml")
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "COMPLETE").write_text("done\n")

    with pytest.raises(ConfigError, match=r"different \['data.max_length', 'train.learning_rate'\]"):
        _check_resumable_config(
            replace(config, data=replace(config.data, max_length=4096),
                    train=replace(config.train, learning_rate=1e-5)), out)
    # the data cache's location and worker count do not change what is trained
    _check_resumable_config(replace(config, data=replace(config.data, cache_dir="/scratch/cache", num_proc=4)), out)


def test_errors_name_where_the_value_came_from(tmp_path):
    _write(tmp_path / "base.yaml", {"data": {"data_path": "d.json"}, "train": {"learning_rate": "abc", "seed": 1}})
    _write(tmp_path / "child.yaml", {"inherit": "base.yaml", "train": {"per_device_batch_size": 8}})
    child, base = tmp_path / "child.yaml", (tmp_path / "base.yaml").resolve()
    # set by the inherited file
    with pytest.raises(ConfigError) as err:
        load_run_config(child)
    assert str(err.value) == f"{base}: train.learning_rate: expected a number, got 'abc'"
    # set on the command line, in a section the files also set
    with pytest.raises(ConfigError) as err:
        load_run_config(child, ["train.learning_rate=1e-3", "train.seed=x"])
    assert str(err.value) == "the override `train.seed=x` on the command line: train.seed: expected int, got 'x'"
    # an override that replaces a whole section takes the blame for what is in it
    with pytest.raises(ConfigError) as err:
        load_run_config(child, ["train={seed: 2, per_device_batch_size: two}"])
    assert str(err.value).startswith("the override `train={seed: 2, per_device_batch_size: two}` on the command line: "
                                     "train.per_device_batch_size: expected int")
    # the file itself, when the child sets the key
    _write(tmp_path / "child.yaml", {"inherit": "base.yaml", "train": {"learning_rate": 1e-3, "seed": "one"}})
    with pytest.raises(ConfigError) as err:
        load_run_config(child)
    assert str(err.value) == f"{child}: train.seed: expected int, got 'one'"


def _amof(path, alpha):
    towers = [{"name": "clip", "path": "c"}, {"name": "dinov2", "path": "d", "feature_layer": -1}]
    return _write(path, {"model": {"llm": "v", "towers": towers, "mixer": {"mode": "additive", "alpha": alpha}},
                         "data": {"data_path": "d.json"}})


def test_mixer_is_checked_when_the_config_loads(tmp_path):
    path = _amof(tmp_path / "amof.yaml", 0.5)
    assert load_run_config(path).model.mixer.alpha == 0.5
    with pytest.raises(ConfigError) as err:
        load_run_config(path, ["model.mixer.alpha=1.5"])
    assert str(err.value) == ("the override `model.mixer.alpha=1.5` on the command line: model.mixer: additive mixing "
                              "ratio alpha must be in [0, 1], got 1.5")
    # a mode that needs one tower, set by a child file: the child is blamed
    child = _write(tmp_path / "none.yaml", {"inherit": "amof.yaml", "model": {"mixer": {"mode": "none", "alpha": 0.0}}})
    with pytest.raises(ConfigError, match=rf"^{child}: model.mixer: mixer mode 'none' uses one tower but 2"):
        load_run_config(child)


def test_print_config_checks_everything_first(tmp_path, capsys, monkeypatch):
    from mof_llava import cli

    monkeypatch.delenv("MOF_LLAVA_TRACEBACK", raising=False)
    path = _amof(tmp_path / "amof.yaml", 0.5)
    for overrides, message in [
        (["model.mixer.alpha=1.5"], "model.mixer: additive mixing ratio alpha must be in [0, 1], got 1.5"),
        ([f"train.deepspeed={tmp_path / 'ds.json'}"], "unknown top-level key 'zero_optimisation'"),
        (["model.towers=[]", "model.mixer.mode=none"], "model: set llm and towers (or init_from)"),
        (["model.llm=null"], "model: set llm and towers (or init_from)"),
        (["train.learning_rate=-1e-5"], "on the command line: train: train.learning_rate must be positive, got -1e-05"),
        (["train.per_device_batch_size=0"], "train.per_device_batch_size must be positive, got 0"),
        (["train.adapter_learning_rate=-1"], "train.adapter_learning_rate must be 0 or more, got -1"),
    ]:
        (tmp_path / "ds.json").write_text('{"zero_optimisation": {"stage": 2}}')
        with pytest.raises(SystemExit) as exit_info:
            cli.run(["train", str(path), *overrides, "--print-config"])
        assert exit_info.value.code == 2
        out = capsys.readouterr()
        assert out.out == "" and out.err.count("\n") == 1 and message in out.err
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["train", str(path), "--print-config"])
    assert exit_info.value.code == 0 and yaml.safe_load(capsys.readouterr().out)["model"]["mixer"]["alpha"] == 0.5
    # overrides after the flag count as overrides too (argparse alone refused them as unrecognized)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["train", str(path), "--print-config", "model.mixer.alpha=0.25", "train.seed=7"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert exit_info.value.code == 0 and printed["model"]["mixer"]["alpha"] == 0.25 and printed["train"]["seed"] == 7
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["train", str(path), "--print-config", "--no-such-flag"])
    assert exit_info.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_deepspeed_path_is_relative_to_the_file_that_names_it(tmp_path, monkeypatch):
    shipped = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "imof_7b" / "stage1.yaml"
    user = tmp_path / "mine"
    user.mkdir()
    _write(user / "run.yaml", {"inherit": str(shipped), "train": {"output_dir": "runs/mine"}})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_run_config(user / "run.yaml")
    assert Path(config.train.deepspeed) == shipped.parents[2] / "deepspeed" / "zero2.json"
    assert Path(config.train.deepspeed).is_file()
    # the user's own file: relative to it; the command line: relative to the current folder
    (user / "ds.json").write_text("{}")
    _write(user / "own.yaml", {"inherit": "run.yaml", "train": {"deepspeed": "ds.json"}})
    assert load_run_config(user / "own.yaml").train.deepspeed == str(user / "ds.json")
    assert load_run_config(user / "run.yaml", ["train.deepspeed=x/ds.json"]).train.deepspeed == str(elsewhere / "x/ds.json")
    # the resolved config written next to a run reads back as itself from anywhere
    config.save(tmp_path / "runs" / "run_config.yaml")
    monkeypatch.chdir(tmp_path)
    assert load_run_config(tmp_path / "runs" / "run_config.yaml") == config
