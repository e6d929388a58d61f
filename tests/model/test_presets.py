"""One place per model decision: the visual token count (one function, which the config, the processor
and the mixer agree with), the placeholder settings the processor requires, and the paper's towers
(presets.py) as the recipes, the YAML configs and checkpoint-free configs use them."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from model_helpers import clip_tower, dino_tower

from mof_llava.model import MofLlavaConfig, MofLlavaProcessor, TowerRecipe, llava15_recipe, mof_recipe
from mof_llava.model.configuration import MixerSpec, MofLlavaConfigError, num_visual_tokens
from mof_llava.model.mixer import FeatureMixer
from mof_llava.model.presets import CLIP_L14_336, DINOV2_L14, PRESETS
from mof_llava.testing.tiny import build_tiny_tokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GRID_24 = (24, 24)  # 336 px / 14 px patches


@pytest.mark.parametrize(
    ("mode", "n_towers", "expected"),
    [("none", 1, 576), ("additive", 2, 576), ("interleave", 2, 1152), ("concat", 2, 576)],
)
def test_token_count_of_the_paper_grids(mode, n_towers, expected):
    # 24 x 24 = 576 patches; only interleaving puts every tower's tokens in the sequence.
    assert num_visual_tokens(MixerSpec(mode=mode), [GRID_24] * n_towers) == expected


@pytest.mark.parametrize(
    ("mixer", "grids", "expected"),
    [
        (MixerSpec(mode="none"), [(16, 24)], 16 * 24),
        (MixerSpec(mode="interleave"), [(16, 24), (16, 24)], 2 * 16 * 24),
        (MixerSpec(mode="additive"), [(16, 24), (16, 24)], 16 * 24),
        (MixerSpec(mode="interleave", grid=(12, 18)), [(16, 24), (24, 24)], 2 * 12 * 18),
        (MixerSpec(mode="concat", grid=(12, 18)), [(16, 24), (24, 24)], 12 * 18),
        (MixerSpec(mode="none", grid=(8, 8)), [(16, 24)], 64),
    ],
)
def test_token_count_of_non_square_grids(mixer, grids, expected):
    assert num_visual_tokens(mixer, grids) == expected


def test_towers_with_different_grids_need_a_mixing_grid():
    with pytest.raises(MofLlavaConfigError, match=r"different token grids \[\(16, 24\), \(24, 24\)\].*mixer.grid"):
        num_visual_tokens(MixerSpec(mode="interleave"), [(16, 24), (24, 24)])
    with pytest.raises(MofLlavaConfigError, match=r"grids \{'clip': \(16, 24\), 'dinov2': \(24, 24\)\}"):
        num_visual_tokens(MixerSpec(mode="concat"), {"clip": (16, 24), "dinov2": (24, 24)})
    assert num_visual_tokens(MixerSpec(mode="none"), {"clip": (16, 24)}) == 384


@pytest.mark.parametrize(
    "mixer",
    [
        MixerSpec(mode="additive", alpha=0.5),
        MixerSpec(mode="interleave"),
        MixerSpec(mode="concat"),
        MixerSpec(mode="interleave", grid=(3, 3)),
        MixerSpec(mode="additive", alpha=0.25, grid=(3, 3)),
    ],
)
def test_the_mixer_produces_as_many_tokens_as_the_function_counts(mixer):
    torch.manual_seed(0)
    towers = (clip_tower(), dino_tower())
    grids = {"clip": (2, 3), "dinov2": (2, 3)} if mixer.grid is None else {"clip": (2, 3), "dinov2": (4, 4)}
    grid = mixer.grid or grids["clip"]
    module = FeatureMixer(mixer, towers, grids, grid, text_hidden_size=8)
    features = {name: torch.randn(2, h * w, 32) for name, (h, w) in grids.items()}
    assert module(features).shape == (2, num_visual_tokens(mixer, list(grids.values())), 8)


def test_processor_requires_the_token_count_and_placeholder_id(tmp_path):
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    image_processor, tokenizer = LlavaImageProcessorPil(), build_tiny_tokenizer()
    with pytest.raises(TypeError, match="num_image_tokens.*image_token_id"):
        MofLlavaProcessor(image_processor, tokenizer)
    with pytest.raises(ValueError, match="num_image_tokens must be a positive integer"):
        MofLlavaProcessor(image_processor, tokenizer, num_image_tokens=0, image_token_id=-200)

    config = MofLlavaConfig(vision_towers=[CLIP_L14_336.spec(), DINOV2_L14.spec()], mixer={"mode": "interleave"})
    processor = MofLlavaProcessor.for_config(config, tokenizer)
    assert (processor.num_image_tokens, processor.image_token_id) == (1152, -200)
    processor.save_pretrained(tmp_path)
    saved = tmp_path / "processor_config.json"
    raw = json.loads(saved.read_text())
    del raw["num_image_tokens"], raw["image_token_id"]
    saved.write_text(json.dumps(raw))
    with pytest.raises(MofLlavaConfigError, match=rf"{tmp_path}: .*lacks num_image_tokens and image_token_id"):
        MofLlavaProcessor.from_pretrained(tmp_path)


def test_recipes_use_the_paper_towers():
    # reference-codebases.md: CLIP ViT-L/14-336 layer -2; DINOv2 ViT-L/14 last block before its final norm,
    # fed the CLIP-preprocessed tensor, CLS dropped, position table resized as torch.hub's.
    clip = TowerRecipe("clip", "openai/clip-vit-large-patch14-336", -2, True, "shared", "transformers")
    dinov2 = TowerRecipe("dinov2", "facebook/dinov2-large", -1, True, "shared", "hub")
    assert mof_recipe("llm").towers == [clip, dinov2]
    assert llava15_recipe("llm").towers == [clip]
    assert mof_recipe("llm", clip="c", dinov2="d").towers[1].path == "d"
    assert {name: p.name for name, p in PRESETS.items()} == {"clip_l14_336": "clip", "dinov2_l14": "dinov2"}


def test_checkpoint_free_presets_are_the_default_tower_and_give_24_x_24_grids():
    assert MofLlavaConfig().vision_towers[0] == CLIP_L14_336.spec().to_dict()
    for preset in (CLIP_L14_336, DINOV2_L14):
        spec = preset.spec()
        assert (spec.hidden_size, spec.grid(336), spec.feature_layer) == (1024, GRID_24, preset.feature_layer)
    assert CLIP_L14_336.spec(image_size=224).grid(224) == (16, 16)


def _run_yaml(tmp_path, towers) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"llm": "vicuna", "towers": towers, "mixer": {"mode": "interleave"}},
        "data": {"data_path": "d.json"},
        "train": {"output_dir": "runs/x"},
    }))  # fmt: skip
    return path


def test_a_preset_expands_in_a_yaml_config_and_explicit_keys_override_it(tmp_path):
    from mof_llava.training.config import ConfigError, load_run_config

    towers = [{"preset": "clip_l14_336"}, {"preset": "dinov2_l14", "normalization": "own", "path": "/dino"}]
    config = load_run_config(_run_yaml(tmp_path, towers))
    clip, dinov2 = config.model.towers
    assert (clip.name, clip.path, clip.feature_layer, clip.pos_interpolation) == (
        "clip", "openai/clip-vit-large-patch14-336", -2, "transformers"
    )
    assert (dinov2.name, dinov2.path, dinov2.feature_layer, dinov2.drop_prefix_tokens) == ("dinov2", "/dino", -1, True)
    assert (dinov2.normalization, dinov2.pos_interpolation) == ("own", "hub")  # overridden, from the preset
    # the resolved config holds the expanded keys only: it reads the same as explicit towers (and resumes)
    assert config.to_dict()["model"]["towers"][0] == {
        "name": "clip", "path": "openai/clip-vit-large-patch14-336", "feature_layer": -2,
        "drop_prefix_tokens": True, "normalization": "shared", "pos_interpolation": "transformers",
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"model.towers\[0\].*unknown tower preset 'clip_l14'"):
        load_run_config(_run_yaml(tmp_path, [{"preset": "clip_l14"}, {"preset": "dinov2_l14"}]))
    with pytest.raises(ConfigError, match=r"model.towers\[1\].*needs a path"):
        load_run_config(_run_yaml(tmp_path, [{"preset": "clip_l14_336"}, {"name": "dinov2"}]))


def test_shipped_tower_configs_are_the_recipes_towers():
    from mof_llava.training.config import load_run_config

    imof = load_run_config(CONFIGS / "experiments" / "imof_7b" / "stage1.yaml").model
    baseline = load_run_config(CONFIGS / "experiments" / "llava15_7b" / "stage1.yaml").model
    assert imof.towers == mof_recipe(imof.llm).towers
    assert baseline.towers == llava15_recipe(baseline.llm).towers
