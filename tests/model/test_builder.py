"""Building a model from component checkpoints, as real runs start."""

import json

import pytest
import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTextConfig,
    Dinov2Config,
    Dinov2Model,
)

from mof_llava import (
    MixerSpec,
    ModelRecipe,
    MofLlavaConfigError,
    TowerRecipe,
    build_model,
    llava15_recipe,
    mof_recipe,
)
from mof_llava.testing.tiny import tiny_clip_vision_config


def test_tower_from_a_full_clip_checkpoint(tiny_parts, tmp_path):
    # Real CLIP checkpoints (openai/clip-vit-large-patch14-336) hold the text and vision halves.
    text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    full = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=tiny_clip_vision_config().to_dict(),
                                projection_dim=16))
    full.save_pretrained(tmp_path / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(tmp_path / "clip")
    model, processor = build_model(llava15_recipe(str(tiny_parts.llm), str(tmp_path / "clip")))
    encoder = model.vision_towers["clip"].encoder.state_dict()
    expected = full.vision_model.state_dict()
    assert encoder.keys() == expected.keys()
    assert all(torch.equal(encoder[k], expected[k]) for k in encoder)
    assert processor.num_image_tokens == 16


def test_checkpoint_missing_weights_is_refused(tiny_parts, tmp_path):
    # A DINOv2 checkpoint with fewer layers than its config says: the rest would be random.
    small = Dinov2Model(Dinov2Config(image_size=56, patch_size=14, hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=4, mlp_ratio=2))
    small.save_pretrained(tmp_path / "dino")
    config = json.loads((tmp_path / "dino" / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (tmp_path / "dino" / "config.json").write_text(json.dumps(config))
    with pytest.raises(MofLlavaConfigError, match=r"dino: the checkpoint has no weights for \d+ parameter"):
        build_model(mof_recipe(str(tiny_parts.llm), str(tiny_parts.clip), str(tmp_path / "dino")))


def test_dinov2_own_normalisation_reads_the_tower_checkpoint(tiny_parts):
    recipe = ModelRecipe(
        str(tiny_parts.llm),
        [TowerRecipe("clip", str(tiny_parts.clip)), TowerRecipe("dinov2", str(tiny_parts.dinov2), -1, normalization="own")],
        MixerSpec(mode="interleave"),
    )
    model, _ = build_model(recipe)
    dino = model.config.towers[1]
    assert dino.image_mean == pytest.approx((0.485, 0.456, 0.406)) and dino.image_std == pytest.approx((0.229, 0.224, 0.225))
    assert model.vision_towers["dinov2"].renorm is not None
    paper, _ = build_model(mof_recipe(str(tiny_parts.llm), str(tiny_parts.clip), str(tiny_parts.dinov2)))
    assert paper.vision_towers["dinov2"].renorm is None  # the paper preset: DINOv2 sees the CLIP-normalised image


def test_image_token_follows_the_tokenizer(tiny_parts):
    model, processor = build_model(llava15_recipe(str(tiny_parts.llm), str(tiny_parts.clip)))
    assert processor.image_token_id == model.config.image_token_id == processor.tokenizer.convert_tokens_to_ids("<image>")


def test_paper_recipe_resizes_dinov2_positions_the_hub_way(tiny_parts):
    model, _ = build_model(mof_recipe(str(tiny_parts.llm), str(tiny_parts.clip), str(tiny_parts.dinov2)))
    assert [t.pos_interpolation for t in model.config.towers] == ["transformers", "hub"]
    embeddings = model.vision_towers["dinov2"].encoder.embeddings  # the loaded encoder, not the skeleton's
    assert embeddings.interpolate_pos_encoding.__func__.__name__ == "hub_interpolate_pos_encoding"
    baseline, _ = build_model(llava15_recipe(str(tiny_parts.llm), str(tiny_parts.clip)))
    assert baseline.config.towers[0].pos_interpolation == "transformers"


@pytest.mark.parametrize("experiment", ["imof_7b", "imof_13b", "amof_7b"])
def test_paper_configs_resize_dinov2_positions_the_hub_way(experiment):
    from pathlib import Path

    from mof_llava.training.config import load_run_config

    configs = Path(__file__).resolve().parents[2] / "configs" / "experiments"
    for stage in ("stage1.yaml", "stage2.yaml"):
        towers = load_run_config(configs / experiment / stage).model.towers
        assert [(t.name, t.pos_interpolation) for t in towers] == [("clip", "transformers"), ("dinov2", "hub")]
