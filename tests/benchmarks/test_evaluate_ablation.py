"""`evaluate` with a tower ablation (EvalConfig.ablate_tower / ablation): checked before anything is
recorded, run with the mixer's reduced token count, recorded in run.json and metrics, and kept
apart from the model's own answers."""

from __future__ import annotations

import json

import pytest
from test_evaluate import _config

from mof_llava.benchmarks import synthetic
from mof_llava.benchmarks.evaluate import evaluate
from mof_llava.benchmarks.runner import RunMismatchError
from mof_llava.model.configuration import MofLlavaConfigError


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):  # evaluate's threads=1 sets torch's; this puts it back after
    pass


@pytest.fixture(scope="module")
def model_dir(tiny_model_dirs):
    return tiny_model_dirs("interleave")


@pytest.fixture(scope="module")
def pope_dir(tmp_path_factory):
    return synthetic.write_pope(tmp_path_factory.mktemp("pope_ablation"), per_split=1)


DROPPED = {"tower": "dinov2", "mode": "drop", "label": "without-dinov2-drop"}


def test_a_dropped_tower_runs_with_fewer_tokens_and_is_recorded_apart(
    model_dir, pope_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    result = evaluate(_config(model_dir, pope_dir, None, ablate_tower="dinov2", ablation="drop"))
    # the LLM refuses placeholders that do not match the visual tokens, so answering at all means
    # the processor wrote the mixer's reduced count
    assert result.output_dir.name == "pope-without-dinov2-drop"
    assert result.metrics["run"]["ablation"] == DROPPED
    assert json.loads((result.output_dir / "run.json").read_text())["ablation"] == DROPPED
    with pytest.raises(RunMismatchError, match="different ablation"):
        evaluate(_config(model_dir, pope_dir, result.output_dir))
    plain = evaluate(_config(model_dir, pope_dir, tmp_path / "plain"))
    assert plain.metrics["run"]["ablation"] is None
    with pytest.raises(RunMismatchError, match="different ablation"):
        evaluate(_config(model_dir, pope_dir, plain.output_dir, ablate_tower="clip", ablation="blank"))


def test_an_ablation_the_model_cannot_take_is_refused_before_anything_is_written(
    model_dir, pope_dir, tmp_path
):
    with pytest.raises(MofLlavaConfigError, match="the model's towers are"):
        evaluate(_config(model_dir, pope_dir, tmp_path / "out", ablate_tower="siglip"))
    assert not (tmp_path / "out").exists()
