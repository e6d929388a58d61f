"""LION's stage-wise recipe (configs/experiments/lion_imof_7b): each shipped stage YAML freezes exactly
what its comment says, and says so in the log; train.lion refuses what cannot work. The expected
masks are written out here from the recipe (docs/lion.md), not read back from stages.py."""

import logging
from pathlib import Path

import pytest
import torch

from mof_llava import MofLlavaForConditionalGeneration
from mof_llava.model.configuration import MofLlavaConfig
from mof_llava.testing.tiny import tiny_clip_vision_config, tiny_dinov2_config, tiny_llama_config
from mof_llava.training.config import LionStageConfig, LoraConfig, load_run_config
from mof_llava.training.stages import apply_stage

LION = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "lion_imof_7b"
STAGES = ["stage_0_pretrain", "stage_a_image", "stage_b_region", "stage_c_mixed"]
# part -> trained in stages 0, A, B, C
EXPECTED = {
    "towers": (False, False, False, False),
    "mixer.adapters": (True, True, True, True),
    "mixer.aggregators": (False, False, True, True),
    "language_model": (False, False, False, False),
    "moa.adapters.image": (False, True, False, True),
    "moa.adapters.region": (False, False, True, True),
    "moa.gates": (False, False, False, True),
}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_lion_model(moa) -> MofLlavaForConditionalGeneration:
    """A tiny I-MoF model with the recipe's parts (aggregator offsets shortened to the tiny towers' 3 blocks)."""
    towers = [
        {"name": "clip", "vision_config": tiny_clip_vision_config(56, 32).to_dict(), "feature_layer": -2},
        {"name": "dinov2", "vision_config": tiny_dinov2_config(56, 32).to_dict(), "feature_layer": -1},
    ]
    torch.manual_seed(0)
    return MofLlavaForConditionalGeneration(MofLlavaConfig(
        text_config=tiny_llama_config(520).to_dict(), vision_towers=towers, image_size=56, image_token_id=512,
        mixer={"mode": "interleave", "aggregator": {"layer_offsets": [-1, -2]}}, moa=moa.to_dict(),
    ))


def _part(name: str) -> str:
    """The recipe part a parameter belongs to."""
    for prefix in ("vision_towers.", "mixer.adapters.", "mixer.aggregators.", "language_model."):
        if name.startswith(prefix):
            return "towers" if prefix == "vision_towers." else prefix.rstrip(".")
    assert name.startswith("moa.routers.")
    _, _, _, kind, *rest = name.split(".")  # moa.routers.<i>.adapters.<k>.... or moa.routers.<i>.gates
    return "moa.gates" if kind == "gates" else f"moa.adapters.{['image', 'region'][int(rest[0])]}"


@pytest.mark.parametrize("index, stage_name", list(enumerate(STAGES)))
def test_each_lion_stage_trains_what_the_recipe_says(index, stage_name, caplog):
    config = load_run_config(LION / f"{stage_name}.yaml")
    moa = config.model.moa or load_run_config(LION / "stage_a_image.yaml").model.moa  # B, C: init_from stage A's
    model = _tiny_lion_model(moa)
    with caplog.at_level(logging.INFO, logger="mof_llava"):
        apply_stage(model, config.train.stage, config.train.lora, config.train.lion)
    got: dict[str, set[bool]] = {}
    for name, param in model.named_parameters():
        got.setdefault(_part(name), set()).add(param.requires_grad)
    assert got == {part: {trained[index]} for part, trained in EXPECTED.items()}
    for part in ("moa.adapters.image", "moa.adapters.region", "moa.gates", "mixer.aggregators"):
        state = "trained" if EXPECTED[part][index] else "frozen"
        assert any(line.startswith(f"{state:<8} {part} ") for line in caplog.messages), (part, caplog.messages)


def test_the_stages_chain_and_share_one_model():
    configs = {name: load_run_config(LION / f"{name}.yaml") for name in STAGES}
    assert configs["stage_a_image"].model.adapters_from == configs["stage_0_pretrain"].train.output_dir + "/adapters"
    assert configs["stage_b_region"].model.init_from == configs["stage_a_image"].train.output_dir + "/model"
    assert configs["stage_c_mixed"].model.init_from == configs["stage_b_region"].train.output_dir + "/model"
    first, second = configs["stage_0_pretrain"].model, configs["stage_a_image"].model
    assert (first.mixer, first.moa, first.towers) == (second.mixer, second.moa, second.towers)
    assert [configs[n].data.task for n in STAGES[1:]] == ["image", "region", None]  # C: per record


def test_train_lion_refuses_what_cannot_work():
    moa = load_run_config(LION / "stage_a_image.yaml").model.moa
    with pytest.raises(ValueError, match="stage 1 \\(pretrain\\) keeps the LLM frozen"):
        apply_stage(_tiny_lion_model(moa), "pretrain", lion=LionStageConfig(llm=True))
    with pytest.raises(ValueError, match=r"names \['grounding'\], which are not the model's moa.tasks"):
        apply_stage(_tiny_lion_model(moa), "finetune", lion=LionStageConfig(adapters=["grounding"]))
    with pytest.raises(ValueError, match="pretrain or finetune, not preference"):
        apply_stage(_tiny_lion_model(moa), "preference", LoraConfig(r=2), lion=LionStageConfig())


def test_without_train_lion_finetune_trains_every_moa_part_and_pretrain_none():
    moa = load_run_config(LION / "stage_a_image.yaml").model.moa
    model = apply_stage(_tiny_lion_model(moa), "finetune")
    assert all(p.requires_grad for p in model.moa.parameters())
    assert all(p.requires_grad for p in model.language_model.parameters())
    model = apply_stage(_tiny_lion_model(moa), "pretrain")
    assert not any(p.requires_grad for p in model.moa.parameters())
    assert all(p.requires_grad for p in model.mixer.aggregators.parameters())  # as before train.lion existed
