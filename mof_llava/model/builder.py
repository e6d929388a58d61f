"""Assemble a MoF-LLaVA model from separate checkpoints: an LLM, a CLIP tower, a DINOv2 tower.

This is how a run starts (stage 1 has no MoF-LLaVA checkpoint yet). Every component is loaded with
its own `from_pretrained` from a local path or hub id; the adapters start from PyTorch's default
init. The recipe says which checkpoints and how they are used; nothing is inferred from names.

    recipe = ModelRecipe(
        llm="lmsys/vicuna-7b-v1.5",
        towers=[TowerRecipe(preset="clip_l14_336"), TowerRecipe(preset="dinov2_l14")],  # presets.py
        mixer=MixerSpec(mode="interleave"),
    )
    model, processor = build_model(recipe)
"""

from __future__ import annotations

import json
import logging
from dataclasses import InitVar, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationConfig
from transformers.utils import cached_file

from ..constants import IMAGE_TOKEN, LLAVA_IMAGE_TOKEN_INDEX, TAG_HINT_TOKEN_INDEX
from .configuration import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    MixerSpec,
    MoaSpec,
    MofLlavaConfig,
    MofLlavaConfigError,
    PosInterpolation,
    TowerSpec,
)
from .modeling import MofLlavaForConditionalGeneration
from .presets import CLIP_L14_336, DINOV2_L14, PRESETS, Normalization, get_preset
from .processing import MofLlavaProcessor
from .tokenizer import load_tokenizer

logger = logging.getLogger(__name__)


@dataclass
class TowerRecipe:
    """A vision tower checkpoint and how its features are taken.

    `preset` names one of the paper's towers (`presets.PRESETS`: `clip_l14_336`, `dinov2_l14`); it
    fills every field left unset, so `TowerRecipe(preset="dinov2_l14", normalization="own")` is the
    paper's DINOv2 with its own statistics. Without a preset, unset fields take `TowerSpec`'s defaults
    (CLIP's layer -2, prefix tokens dropped, transformers' position resize) and `normalization="shared"`.

    `normalization="shared"`: the tower sees the primary tower's preprocessed tensor unchanged (the
    paper fed DINOv2 the CLIP-normalised image); `"own"`: its input is re-normalised to the
    statistics in the tower checkpoint's `preprocessor_config.json`.

    `pos_interpolation` (DINOv2 towers): `"hub"` resizes the position table as torch.hub's DINOv2,
    which the paper ran; `"transformers"` as transformers' Dinov2Model (see `TowerSpec`).
    """

    name: str | None = None
    path: str | None = None
    feature_layer: int | None = None
    drop_prefix_tokens: bool | None = None
    normalization: Normalization | None = None
    pos_interpolation: PosInterpolation | None = None
    # Init-only: the recipe keeps the expanded fields, so a resolved config reads the same however
    # its towers were written (and a run started before presets existed resumes).
    preset: InitVar[str | None] = None

    def __post_init__(self, preset: str | None) -> None:
        defaults = get_preset(preset).recipe_fields() if preset is not None else _PLAIN_TOWER
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        for key in ("name", "path"):
            if getattr(self, key) is None:
                raise MofLlavaConfigError(f"a tower recipe needs a {key} (or a preset: {sorted(PRESETS)})")


# What a tower without a preset gets: TowerSpec's own defaults, and the primary tower's pixels.
_SPEC_DEFAULTS = {f.name: f.default for f in fields(TowerSpec)}
_PLAIN_TOWER: dict[str, Any] = {
    **{key: _SPEC_DEFAULTS[key] for key in ("feature_layer", "drop_prefix_tokens", "pos_interpolation")},
    "normalization": "shared",
}


@dataclass
class ModelRecipe:
    llm: str
    towers: list[TowerRecipe]
    mixer: MixerSpec = field(default_factory=MixerSpec)
    # None: the tokenizer's <image> id when it has one (llava-hf style), else LLaVA's -200
    image_token_id: int | None = None
    # LION's tag soft prompt: one learnable vector at the `<tag_hint>` placeholder (model/tag_prompt.py)
    tag_soft_prompt: bool = False
    moa: MoaSpec | None = None  # LION's mixture of adapters in the LLM (model/moa.py)


def llava15_recipe(llm: str, clip: str = CLIP_L14_336.path) -> ModelRecipe:
    """LLaVA-1.5: the `CLIP_L14_336` preset (layer -2 patch features), mlp2x_gelu adapter."""
    return ModelRecipe(llm, [TowerRecipe(preset="clip_l14_336", path=clip)], MixerSpec(mode="none"))


def mof_recipe(
    llm: str, clip: str = CLIP_L14_336.path, dinov2: str = DINOV2_L14.path, mode: str = "interleave", alpha: float = 0.0
) -> ModelRecipe:
    """The paper's MoF models: the `CLIP_L14_336` and `DINOV2_L14` presets (CLIP layer -2 + DINOv2's
    last block before its final LayerNorm, DINOv2 fed the CLIP-preprocessed image, its position table
    resized the torch.hub way). `mode="interleave"` is I-MoF, `mode="additive"` A-MoF with ratio alpha."""
    towers = [TowerRecipe(preset="clip_l14_336", path=clip), TowerRecipe(preset="dinov2_l14", path=dinov2)]
    return ModelRecipe(llm, towers, MixerSpec(mode=mode, alpha=alpha if mode == "additive" else 0.0))


def build_model(
    recipe: ModelRecipe,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
) -> tuple[MofLlavaForConditionalGeneration, MofLlavaProcessor]:
    tokenizer = load_tokenizer(recipe.llm)
    image_token_id = recipe.image_token_id if recipe.image_token_id is not None else default_image_token_id(tokenizer)

    primary_stats = _preprocessing_stats(recipe.towers[0].path)
    pixel_mean, pixel_std = primary_stats["image_mean"], primary_stats["image_std"]
    tower_specs = [_tower_spec(tower, pixel_mean, pixel_std) for tower in recipe.towers]

    config = MofLlavaConfig(
        text_config=AutoConfig.from_pretrained(recipe.llm),
        vision_towers=tower_specs,
        mixer=recipe.mixer,
        image_size=primary_stats["image_size"],
        image_mean=list(pixel_mean),
        image_std=list(pixel_std),
        image_token_id=image_token_id,
        moa=recipe.moa,
        tag_hint_token_id=TAG_HINT_TOKEN_INDEX if recipe.tag_soft_prompt else None,
    )
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation

    model = _assemble(recipe, config, dtype, attn_implementation)
    processor = MofLlavaProcessor.for_config(config, tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = processor.pad_token_id
    logger.info(
        "built MoF-LLaVA: towers %s, mixer %s, %d visual tokens per image",
        [t.name for t in tower_specs], config.mixer, config.num_image_tokens,
    )
    return model, processor


def _tower_spec(tower: TowerRecipe, pixel_mean, pixel_std) -> TowerSpec:
    """A tower's config entry; 'shared' normalization uses the primary tower's mean/std."""
    if tower.normalization == "own":
        stats = _preprocessing_stats(tower.path)
        mean, std = stats["image_mean"], stats["image_std"]
    elif tower.normalization == "shared":
        mean, std = pixel_mean, pixel_std
    else:
        raise MofLlavaConfigError(f"tower {tower.name!r}: normalization must be 'shared' or 'own'")
    return TowerSpec(
        name=tower.name,
        vision_config=_vision_config(tower.path).to_dict(),
        feature_layer=tower.feature_layer,
        drop_prefix_tokens=tower.drop_prefix_tokens,
        image_mean=tuple(mean),
        image_std=tuple(std),
        pos_interpolation=tower.pos_interpolation,
    )


def _assemble(
    recipe: ModelRecipe,
    config: MofLlavaConfig,
    dtype: torch.dtype | None,
    attn_implementation: str | None,
) -> MofLlavaForConditionalGeneration:
    """Build the skeleton without allocating or initialising weights, then put the real parts in."""
    with torch.device("meta"):
        model = MofLlavaForConditionalGeneration(config)
    load_kwargs: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation is not None:
        load_kwargs["attn_implementation"] = attn_implementation
    model.language_model = _load_complete(AutoModelForCausalLM, recipe.llm, **load_kwargs)
    for tower in recipe.towers:
        encoder_class = AutoModel._model_mapping[type(_vision_config(tower.path))]
        encoder = _load_complete(encoder_class, tower.path, **({"dtype": dtype} if dtype is not None else {}))
        model.vision_towers[tower.name].attach_encoder(encoder)
    model.mixer.to_empty(device="cpu")
    for module in model.mixer.modules():
        if isinstance(module, (nn.Linear, nn.LayerNorm)):  # the aggregator's too (zero outputs, aggregator.py)
            module.reset_parameters()
    if dtype is not None:
        model.mixer.to(dtype)
    if model.tag_prompt is not None:  # LION's hint vector starts from its own init (tag_prompt.py)
        model.tag_prompt.to_empty(device="cpu")
        model.tag_prompt.reset_parameters()
        model.tag_prompt.to(model.language_model.dtype)
    if model.moa is not None:  # LION's routers: fresh (moa.py), hooked onto the LLM just loaded
        model.moa.to_empty(device="cpu")
        model.moa.reset_parameters()
        model.moa.to(model.language_model.dtype)
        model.moa.attach(model.language_model)
    model.generation_config = _generation_config(recipe.llm)
    return model


def _load_complete(model_class, path: str, **kwargs):
    """`from_pretrained`, refusing checkpoints that lack weights: transformers would initialise them
    randomly and only print a report, and a frozen tower with random weights ruins a run silently.
    Extra weights (a full CLIP checkpoint's text half, for a vision tower) are fine."""
    model, info = model_class.from_pretrained(path, output_loading_info=True, **kwargs)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise MofLlavaConfigError(
            f"{path}: the checkpoint has no weights for {len(missing)} parameter(s) of {model_class.__name__} "
            f"(e.g. {missing[:3]}); is it the right checkpoint for this part?"
        )
    return model


def default_image_token_id(tokenizer) -> int:
    """The tokenizer's own `<image>` token if its vocabulary has one, else LLaVA's -200."""
    token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if token_id is None or token_id == tokenizer.unk_token_id:
        return LLAVA_IMAGE_TOKEN_INDEX
    return int(token_id)


def _vision_config(path: str):
    """The vision encoder's config; a full CLIP/SigLIP checkpoint (text + vision) gives its vision part."""
    config = AutoConfig.from_pretrained(path)
    return getattr(config, "vision_config", None) or config


def _preprocessing_stats(path: str) -> dict[str, Any]:
    """Image size and normalisation statistics from a tower checkpoint's preprocessor_config.json."""
    vision_config = _vision_config(path)
    found = cached_file(path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False)
    if found is None:
        if getattr(vision_config, "model_type", "").startswith("clip"):
            return {"image_size": vision_config.image_size, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD}
        raise MofLlavaConfigError(f"{path}: no preprocessor_config.json to read the image size and statistics from")
    data = json.loads(Path(found).read_text())
    crop = data.get("crop_size") or data.get("size") or {}
    if isinstance(crop, dict):
        image_size = crop.get("height") or crop.get("shortest_edge")
    else:
        image_size = int(crop)
    image_size = image_size or getattr(vision_config, "image_size", None)
    return {"image_size": int(image_size), "image_mean": tuple(data["image_mean"]), "image_std": tuple(data["image_std"])}


def _generation_config(llm: str) -> GenerationConfig:
    try:
        return GenerationConfig.from_pretrained(llm)
    except OSError:
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(llm))
