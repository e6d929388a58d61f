"""The shipped token-budget sweep: I-MoF with each tower pooled to 12 x 24 plans beside LLaVA-1.5 and
I-MoF, and its visual token count (configuration.num_visual_tokens of its mixer and the paper
towers' grids) equals the baseline's."""

from __future__ import annotations

import yaml
from experiments_helpers import EXPERIMENTS

from mof_llava.experiments import api
from mof_llava.experiments.expand import expand
from mof_llava.experiments.spec import load_sweep
from mof_llava.model.configuration import num_visual_tokens
from mof_llava.model.presets import CLIP_L14_336, DINOV2_L14

SWEEP = EXPERIMENTS / "sweeps" / "token_budget.yaml"


def test_i_mof_at_the_baselines_budget_has_576_tokens_against_1152():
    runs = {r.name: r for r in expand(load_sweep(SWEEP))}
    grids = {"clip": CLIP_L14_336.spec().grid(336), "dinov2": DINOV2_L14.spec().grid(336)}
    assert grids == {"clip": (24, 24), "dinov2": (24, 24)}
    tokens = {}
    for name, run in runs.items():
        assert run.stage1.model.mixer == run.stage2.model.mixer  # the stage-1 adapters load in stage 2
        model = run.stage2.model
        tokens[name] = num_visual_tokens(model.mixer, {t.name: grids[t.name] for t in model.towers})
    assert tokens == {"llava-1.5-7b_seed-42": 576, "i-mof-7b_seed-42": 1152, "i-mof-7b-576_seed-42": 2 * 288}
    budget = runs["i-mof-7b-576_seed-42"].stage2.model.mixer
    assert (budget.mode, budget.grid, budget.resample) == ("interleave", (12, 24), "avgpool")


def test_the_sweep_plans_and_its_resolved_configs_keep_the_pooling(tmp_path):
    plan = api.plan(api.SweepOptions(SWEEP, output_root=tmp_path / "runs"))
    assert [r.name for r in plan.runs] == ["llava-1.5-7b_seed-42", "i-mof-7b_seed-42", "i-mof-7b-576_seed-42"]
    resolved = yaml.safe_load((tmp_path / "runs" / "i-mof-7b-576_seed-42" / "stage2.yaml").read_text())
    assert (
        resolved["model"]["mixer"]["grid"] == [12, 24] and resolved["model"]["mixer"]["resample"] == "avgpool"
    )
