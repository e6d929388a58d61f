"""The demo pipeline end to end at minimal sizes: data -> components -> stage 1 -> stage 2 -> MMVP
evaluation, for two mixers sharing one dataset; then resuming, refusing, and the command line."""

from __future__ import annotations

import json
import statistics

import pytest

from mof_llava.demo.run import (
    I_MOF,
    LLAVA_15,
    DemoFolderError,
    DemoSettings,
    a_mof,
    parse_variant,
    read_losses,
    run_demo,
)

PAIRS = 4


def tiny_settings(**changes) -> DemoSettings:
    return DemoSettings(
        samples=96,
        mmvp_pairs=PAIRS,
        batch_size=8,
        language_steps=40,
        max_new_tokens=8,
        progress=False,
        **changes,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return run_demo(tmp_path_factory.mktemp("demo") / "out", tiny_settings(), variants=(I_MOF, a_mof(0.5)))


@pytest.mark.slow
def test_every_artifact_is_written(demo):
    out = demo.out_dir
    for name in ("stage1_pretrain.json", "stage2_instruct.json", "mmvp/Questions.csv", "scenes.jsonl"):
        assert (out / "data" / name).is_file()
    for part in ("llm", "llm-text", "clip", "dinov2"):
        assert (out / "components" / part / "config.json").is_file()
    assert (out / "components" / "llm-text" / "tokenizer_config.json").is_file()
    for variant in demo.variants:
        folder = out / variant.variant.name
        assert (folder / "stage1.yaml").is_file() and (folder / "stage2.yaml").is_file()
        assert variant.stage1.artifact == folder / "stage1" / "adapters"
        assert {p.name for p in variant.stage1.artifact.iterdir()} >= {
            "adapters.safetensors",
            "adapters_config.json",
        }
        assert variant.stage2.artifact == folder / "stage2" / "model"
        assert (variant.stage2.artifact / "config.json").is_file()
        assert (variant.stage2.artifact / "processor_config.json").is_file()
        for stage in (variant.stage1, variant.stage2):
            assert stage.metrics.is_file() and (stage.output_dir / "run_config.yaml").is_file()
            assert stage.checkpoints and all((c / "COMPLETE").is_file() for c in stage.checkpoints)
        answers = [json.loads(line) for line in variant.answers.read_text().splitlines()]
        assert [a["question_id"] for a in answers] == list(range(1, 2 * PAIRS + 1))
        metrics = json.loads((variant.eval_dir / "metrics.json").read_text())
        assert metrics["pairs"] == PAIRS and metrics["run"]["model"] == str(variant.stage2.artifact)
        assert variant.scores["pairs"] == PAIRS
        per_pattern = variant.scores["per_pattern"]
        assert sum(p["pairs"] for p in per_pattern.values()) == PAIRS and len(per_pattern) == 4
        both = sum(p["accuracy"] * p["pairs"] / 100 for p in per_pattern.values())
        assert both == pytest.approx(metrics["pairs_correct"])
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["results"]) == {"i-mof", "a-mof-0.5"}
    assert summary["finished"] == [
        "data",
        "components",
        "i-mof/stage1",
        "i-mof/stage2",
        "a-mof-0.5/stage1",
        "a-mof-0.5/stage2",
    ]


@pytest.mark.slow
def test_training_loss_falls_in_both_stages(demo):
    for variant in demo.variants:
        for stage in (variant.stage1, variant.stage2):
            losses = read_losses(stage.metrics)
            assert losses == stage.losses and len(losses) >= 12
            third = len(losses) // 3
            assert statistics.mean(losses[-third:]) < statistics.mean(losses[:third]), (
                stage.output_dir,
                losses,
            )


@pytest.mark.slow
def test_run_configs_are_the_files_the_runs_used(demo):
    import yaml

    from mof_llava.training.config import load_run_config

    folder = demo.out_dir / "i-mof"
    stage1, stage2 = load_run_config(folder / "stage1.yaml"), load_run_config(folder / "stage2.yaml")
    assert (stage1.train.stage, stage1.data.template) == ("pretrain", "plain")
    assert (stage2.train.stage, stage2.data.template) == ("finetune", "vicuna_v1")
    assert stage2.model.towers == stage1.model.towers and [t.name for t in stage1.model.towers] == [
        "clip",
        "dinov2",
    ]
    assert stage1.model.mixer.mode == stage2.model.mixer.mode == "interleave"
    assert stage2.model.adapters_from == str(folder / "stage1" / "adapters")
    assert stage1.model.llm == str(demo.components.llm)
    assert stage1.train.cpu_threads == stage2.train.cpu_threads == 1  # DemoSettings.threads
    for number, config in ((1, stage1), (2, stage2)):
        written = yaml.safe_load((folder / f"stage{number}" / "run_config.yaml").read_text())
        assert written == config.to_dict()
    additive = load_run_config(demo.out_dir / "a-mof-0.5" / "stage2.yaml").model.mixer
    assert (additive.mode, additive.alpha) == ("additive", 0.5)


@pytest.mark.slow
def test_a_second_run_skips_finished_steps(demo, capsys):
    first = demo.variants[0]
    written = [
        demo.components.llm / "model.safetensors",
        first.stage1.artifact / "adapters.safetensors",
        first.stage2.artifact / "model.safetensors",
        first.stage2.metrics,
    ]
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in written}
    answers = first.answers.read_text()
    capsys.readouterr()
    again = run_demo(demo.out_dir, tiny_settings(), variants=(I_MOF,))
    progress = capsys.readouterr().err.splitlines()
    for line in (
        "[1/5] data: 96 pictures per stage, 4 MMVP pairs (done before: skipped)",
        "[3/5] i-mof stage 1: training the adapters (done before: skipped)",
        "[4/5] i-mof stage 2: training the adapters and the LLM (done before: skipped)",
        "[5/5] i-mof evaluation: 8 synthetic MMVP questions",
    ):
        assert line in progress
    assert "torch CPU threads: 1 (--threads)" in progress
    assert {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in written} == before
    assert again.variants[0].answers.read_text() == answers  # re-scored, nothing generated again
    assert again.variants[0].stage2.losses == first.stage2.losses
    assert again.variants[0].scores == first.scores


@pytest.mark.slow
def test_other_settings_are_refused(demo):
    with pytest.raises(DemoFolderError, match="seed"):
        run_demo(demo.out_dir, tiny_settings(seed=1))


@pytest.mark.slow
def test_report_says_where_everything_is(demo):
    from mof_llava.demo.report import format_report

    report = format_report(demo)
    for variant in demo.variants:
        for path in (
            variant.stage1.artifact,
            variant.stage2.artifact,
            variant.answers,
            variant.stage2.metrics,
        ):
            assert str(path) in report
        assert str(variant.stage2.checkpoints[-1]) in report
    for variant in demo.variants:
        for stage in (variant.stage1, variant.stage2):
            losses = read_losses(stage.metrics)
            k = min(5, len(losses) // 4)  # the first and last steps, never overlapping
            smoothed = f"{statistics.median(losses[:k]):.3f} -> {statistics.median(losses[-k:]):.3f}"
            assert f"{stage.steps} steps, loss {smoothed} (median of the first / last {k} steps)" in report


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DemoFolderError, match="not empty"):
        run_demo(tmp_path, tiny_settings())
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_variant_names():
    assert parse_variant("i-mof") == I_MOF
    assert parse_variant("llava-1.5") == LLAVA_15
    assert parse_variant("a-mof-0.75").mixer.alpha == 0.75
    assert parse_variant("a-mof-0").name == "a-mof-0"
    for bad in ("a-mof-1.5", "a-mof-x", "mof"):
        with pytest.raises(ValueError, match="unknown demo model"):
            parse_variant(bad)


def test_command_line(tmp_path, capsys):
    from mof_llava.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "--samples" in capsys.readouterr().out

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        main(["demo", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="unknown demo model"):
        main(["demo", "--out", str(tmp_path / "new"), "--model", "mof"])
    with pytest.raises(SystemExit, match="samples must be at least 1"):
        main(["demo", "--out", str(tmp_path / "new"), "--samples", "0"])
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("tower", ["clip", "dinov2"])
def test_a_twin_i_mof_interleaves_one_towers_features_through_two_adapters(tmp_path, tower):
    """`i-mof-<tower>-<tower>`: the run config loads one checkpoint twice, at that tower's layer; the
    built model's tokens alternate between the two adapters applied to the same features."""
    import torch

    from mof_llava.demo.run import Components, twin_i_mof, write_run_configs
    from mof_llava.model.builder import build_model
    from mof_llava.testing.tiny import save_tiny_checkpoints
    from mof_llava.training.config import load_run_config

    tiny = save_tiny_checkpoints(tmp_path / "tiny", image_size=28)
    components = Components(tmp_path, tiny.llm, tiny.clip, tiny.dinov2, (0.0, 0.0))
    variant = parse_variant(f"i-mof-{tower}-{tower}")
    assert variant == twin_i_mof(tower)
    plain = load_run_config(write_run_configs(tmp_path / "plain", I_MOF, tiny_settings(), tmp_path / "data",
                                              components, tmp_path / "cache")[0]).model  # fmt: skip
    twin = load_run_config(write_run_configs(tmp_path / "twin", variant, tiny_settings(), tmp_path / "data",
                                             components, tmp_path / "cache")[0]).model  # fmt: skip
    (source,) = [t for t in plain.towers if t.name == tower]
    assert [t.name for t in twin.towers] == [tower, f"{tower}_twin"]
    assert {(t.path, t.feature_layer) for t in twin.towers} == {(source.path, source.feature_layer)}

    torch.manual_seed(0)
    model, _ = build_model(twin.recipe())
    first, second = (model.vision_towers[t.name] for t in twin.towers)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    pixels = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        tokens = model.get_image_features(pixels)
        features = first.hidden_states(pixels, model.mixer.tower_layers[tower])[0]
        expected = [model.mixer.adapters[t.name](features) for t in twin.towers]
    assert tokens.shape[1] == 2 * features.shape[1]
    torch.testing.assert_close(tokens[:, 0::2], expected[0])
    torch.testing.assert_close(tokens[:, 1::2], expected[1])
    assert not torch.allclose(expected[0], expected[1])  # two adapters, initialised apart
