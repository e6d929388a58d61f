"""Import and export of existing checkpoints.

Imports (each writes a MoF-LLaVA model + processor that `from_pretrained` loads):
- `llava-hf`: transformers' `LlavaForConditionalGeneration` layout (the llava-hf/* checkpoints).
- `llava`: the original LLaVA-1.5 layout (`model.mm_projector.*`, optional `model.vision_tower.*`,
  LLaVA's own config.json fields `mm_vision_select_layer`, `mm_projector_type`, ...). When the
  checkpoint holds no CLIP weights (LLaVA-1.5's releases load CLIP separately), they come from
  `vision_tower` (default: the config's `mm_vision_tower`).
- `mmvp`: the MMVP repository's Interleaved-MoF layout: LLaVA's plus `model.dino_mm_projector.*`.
  Its DINOv2 was loaded from torch hub at run time, so DINOv2 weights come from `dino_tower`
  (a transformers Dinov2Model checkpoint, e.g. facebook/dinov2-large).
- a stage-1 folder of either (config.json + `mm_projector.bin`, no LLM weights): `import_projector`
  gives the projector(s) as a MoF-LLaVA adapters artifact, the start of stage 2.

Keys are mapped by exact prefixes, most specific first, and every key must be accounted for:
`model.dino_mm_projector.*` can never land in the CLIP adapter (the reference code's substring
matching does exactly that), and an unknown key is an error, not a silent drop.

Export: a baseline model (one CLIP tower, mixer `none`, `mlp2x_gelu`) to `LlavaForConditionalGeneration`.

`convert(ConvertJob(...))` is `mof-llava convert` from Python: one call, either direction.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)
from transformers.initialization import no_init_weights
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

from .constants import IMAGE_TOKEN, LLAVA_IMAGE_TOKEN_INDEX
from .model.builder import _load_complete, _preprocessing_stats, _vision_config
from .model.configuration import MixerSpec, MofLlavaConfig, TowerSpec
from .model.llava_projector import PROJECTOR_FILES, adapter_key, load_projector
from .model.modeling import MofLlavaForConditionalGeneration
from .model.presets import CLIP_L14_336, DINOV2_L14
from .model.processing import MofLlavaProcessor
from .model.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

IMPORT_FORMATS = ("llava-hf", "llava", "mmvp")


class ConversionError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------
# llava-hf -> MoF-LLaVA
# ------------------------------------------------------------------------------------------------
def import_llava_hf(src: str | Path) -> tuple[MofLlavaForConditionalGeneration, MofLlavaProcessor]:
    llava = LlavaForConditionalGeneration.from_pretrained(src)
    cfg = llava.config
    if not isinstance(cfg.vision_feature_layer, int):
        raise ConversionError(f"{src}: several vision feature layers {cfg.vision_feature_layer} are not supported")
    if cfg.projector_hidden_act != "gelu" or not cfg.multimodal_projector_bias:
        raise ConversionError(f"{src}: only LLaVA-1.5's projector (Linear-GELU-Linear with bias) maps onto mlp2x_gelu")
    stats = _stats_or_clip_default(src, cfg.vision_config)
    tower = TowerSpec(
        name="clip",
        vision_config=cfg.vision_config.to_dict(),
        feature_layer=cfg.vision_feature_layer,
        drop_prefix_tokens=cfg.vision_feature_select_strategy == "default",
        image_mean=stats["image_mean"],
        image_std=stats["image_std"],
    )
    config = MofLlavaConfig(
        text_config=cfg.text_config,
        vision_towers=[tower],
        mixer=MixerSpec(mode="none", adapter="mlp2x_gelu"),
        image_size=cfg.vision_config.image_size,
        image_mean=list(stats["image_mean"]),
        image_std=list(stats["image_std"]),
        image_token_id=cfg.image_token_id,
    )
    projector = llava.model.multi_modal_projector
    state = {}
    state.update(_prefixed("vision_towers.clip.encoder.", llava.model.vision_tower.state_dict()))
    state.update(_prefixed("mixer.adapters.clip.0.", projector.linear_1.state_dict()))
    state.update(_prefixed("mixer.adapters.clip.2.", projector.linear_2.state_dict()))
    model = _materialise(config, state, llm_body=llava.model.language_model.state_dict(), lm_head=llava.lm_head.state_dict())
    model.generation_config = llava.generation_config
    tokenizer = load_tokenizer(src)
    return model, MofLlavaProcessor.for_config(config, tokenizer)


# ------------------------------------------------------------------------------------------------
# original LLaVA / MMVP layouts -> MoF-LLaVA
# ------------------------------------------------------------------------------------------------
def import_llava_original(
    src: str | Path,
    layout: str = "llava",
    vision_tower: str | None = None,
    dino_tower: str | None = None,
) -> tuple[MofLlavaForConditionalGeneration, MofLlavaProcessor]:
    src = Path(src)
    # LLaVA's own config.json: AutoConfig would read its `model_type: llava` as llava-hf's config.
    raw = json.loads((src / "config.json").read_text())
    weights = _read_weights(src)
    is_mof = any(k.startswith("model.dino_mm_projector.") for k in weights)
    if layout == "llava" and is_mof:
        raise ConversionError(f"{src}: holds model.dino_mm_projector.* (the MMVP MoF layout); convert with --from mmvp")
    if layout == "mmvp" and not is_mof:
        raise ConversionError(f"{src}: no model.dino_mm_projector.* keys; this is not the MMVP MoF layout")
    vision_tower = _resolve_vision_tower(src, raw, vision_tower)
    config = _original_config(src, raw, layout, vision_tower, dino_tower)

    state, llm_body, lm_head, skipped = {}, {}, {}, []
    for key, value in weights.items():
        target = _map_original_key(key, layout)
        if target is None:
            skipped.append(key)
        elif target[0] == "llm_body":
            llm_body[target[1]] = value
        elif target[0] == "lm_head":
            lm_head[target[1]] = value
        else:
            state[target[1]] = value
    if skipped:
        logger.warning("%s: %d keys of the reference's DINOv2 wrapper were not imported (e.g. %s); "
                       "DINOv2 weights come from %s", src, len(skipped), skipped[0], dino_tower)
    if not any(k.startswith("vision_towers.clip.") for k in state):
        state.update(_prefixed("vision_towers.clip.encoder.", _encoder_state(vision_tower)))
    if layout == "mmvp":
        state.update(_prefixed("vision_towers.dinov2.encoder.", _encoder_state(dino_tower)))
    model = _materialise(config, state, llm_body=llm_body, lm_head=lm_head)
    tokenizer = load_tokenizer(src)
    processor = MofLlavaProcessor.for_config(config, tokenizer, "pad" if raw.get("image_aspect_ratio") == "pad" else "crop")
    return model, processor


def import_projector(
    src: str | Path,
    layout: str = "llava",
    vision_tower: str | None = None,
    dino_tower: str | None = None,
) -> MofLlavaForConditionalGeneration:
    """A LLaVA/MMVP stage-1 folder (its config.json + mm_projector.bin, no LLM weights) as a model whose
    mixer holds the projector(s), every key placed by exact name (`load_projector`). Only the mixer is
    allocated: write it with `save_adapters` and start stage 2 from that artifact."""
    src = Path(src)
    raw = json.loads((src / "config.json").read_text())
    config = _original_config(src, raw, layout, _resolve_vision_tower(src, raw, vision_tower), dino_tower)
    with torch.device("meta"):
        model = MofLlavaForConditionalGeneration(config)
    model.mixer.to_empty(device="cpu")
    load_projector(model, src)
    return model


def is_projector_folder(src: str | Path) -> bool:
    """A stage-1 output of LLaVA or MMVP: a projector file and no full model weights."""
    src = Path(src)
    full = any(src.glob("*.safetensors")) or any(src.glob("pytorch_model*.bin"))
    return not full and (src / PROJECTOR_FILES[0]).is_file()


def _resolve_vision_tower(src: Path, raw: dict[str, Any], vision_tower: str | None) -> str:
    vision_tower = vision_tower or raw.get("mm_vision_tower")
    if vision_tower is None:
        raise ConversionError(f"{src}: config.json has no mm_vision_tower; pass the CLIP checkpoint with --vision-tower")
    return vision_tower


def _original_config(
    src: Path, raw: dict[str, Any], layout: str, vision_tower: str, dino_tower: str | None
) -> MofLlavaConfig:
    """The MoF-LLaVA config of an original LLaVA (or MMVP) checkpoint, from LLaVA's config.json fields."""
    if raw.get("mm_use_im_start_end") or raw.get("mm_use_im_patch_token"):
        raise ConversionError(f"{src}: checkpoints with image start/end or patch tokens are not supported")

    clip_config = _vision_config(vision_tower)
    clip_stats = _stats_or_clip_default(vision_tower, clip_config)
    adapter = raw.get("mm_projector_type", "linear")
    towers = [
        TowerSpec(
            name="clip",
            vision_config=clip_config.to_dict(),
            feature_layer=int(raw.get("mm_vision_select_layer", CLIP_L14_336.feature_layer)),  # LLaVA-1.5 when absent
            drop_prefix_tokens=raw.get("mm_vision_select_feature", "patch") == "patch",
            image_mean=clip_stats["image_mean"],
            image_std=clip_stats["image_std"],
        )
    ]
    if layout == "mmvp":
        if dino_tower is None:
            raise ConversionError(
                f"{src}: the MMVP layout keeps no usable DINOv2 weights; pass a transformers DINOv2 checkpoint "
                f"with --dino-tower (the reference used DINOv2 ViT-L/14, e.g. {DINOV2_L14.path})"
            )
        # The reference ran the DINOV2_L14 preset: torch.hub's DINOv2 fed the CLIP-preprocessed tensor,
        # its last block before the final norm, the position table resized the hub's way.
        towers.append(
            TowerSpec(
                name=DINOV2_L14.name,
                vision_config=_vision_config(dino_tower).to_dict(),
                feature_layer=DINOV2_L14.feature_layer,
                drop_prefix_tokens=DINOV2_L14.drop_prefix_tokens,
                image_mean=clip_stats["image_mean"],
                image_std=clip_stats["image_std"],
                pos_interpolation=DINOV2_L14.pos_interpolation,
            )
        )
    text_fields = {k: v for k, v in raw.items() if not k.startswith("mm_") and k not in _LLAVA_ONLY_FIELDS}
    return MofLlavaConfig(
        text_config=LlamaConfig(**text_fields),
        vision_towers=towers,
        mixer=MixerSpec(mode="interleave" if layout == "mmvp" else "none", adapter=adapter),
        image_size=clip_config.image_size,
        image_mean=list(clip_stats["image_mean"]),
        image_std=list(clip_stats["image_std"]),
        image_token_id=LLAVA_IMAGE_TOKEN_INDEX,
    )


_LLAVA_ONLY_FIELDS = {
    "architectures", "model_type", "image_aspect_ratio", "image_grid_pinpoints", "tokenizer_model_max_length",
    "tokenizer_padding_side", "tune_mm_mlp_adapter", "freeze_mm_mlp_adapter", "use_mm_proj",
    "transformers_version", "_name_or_path",
}

# (source prefix, destination, layouts it applies to), most specific first.
_ORIGINAL_PREFIXES: list[tuple[str, tuple[str, str] | None, tuple[str, ...]]] = [
    ("model.dino_mm_projector.", ("model", "mixer.adapters.dinov2."), ("mmvp",)),
    ("model.dino_tower.", None, ("mmvp",)),
    ("model.mm_projector.", ("model", "mixer.adapters.clip."), ("llava", "mmvp")),
    ("model.vision_tower.vision_tower.vision_model.", ("model", "vision_towers.clip.encoder."), ("llava", "mmvp")),
    ("model.vision_tower.vision_tower.", ("model", "vision_towers.clip.encoder."), ("llava", "mmvp")),
    ("model.", ("llm_body", ""), ("llava", "mmvp")),
    ("lm_head.", ("lm_head", ""), ("llava", "mmvp")),
]


def _map_original_key(key: str, layout: str) -> tuple[str, str] | None:
    for prefix, destination, layouts in _ORIGINAL_PREFIXES:
        if key.startswith(prefix) and layout in layouts:
            if destination is None:
                return None
            rest = key[len(prefix) :]
            if destination[1].startswith("mixer.adapters."):  # a `linear` projector's bare weight/bias
                rest = adapter_key(rest)
            return destination[0], destination[1] + rest
    raise ConversionError(f"checkpoint key {key!r} has no place in a MoF-LLaVA model ({layout} layout)")


# ------------------------------------------------------------------------------------------------
# MoF-LLaVA baseline -> llava-hf
# ------------------------------------------------------------------------------------------------
def export_llava_hf(
    model: MofLlavaForConditionalGeneration, processor: MofLlavaProcessor
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A baseline model as transformers' `LlavaForConditionalGeneration`.

    llava-hf embeds its image token, so a model whose placeholder id lies outside the vocabulary
    (LLaVA's -200) gets an `<image>` token appended to the tokenizer. When that id is past the end of
    the vocabulary, one embedding row and one lm_head row are added, both zero: every existing logit
    is unchanged and the new token's logit is 0.
    """
    config = model.config
    tower = _baseline_tower(config)
    select = "default" if tower.drop_prefix_tokens else "full"  # llava-hf's names for dropping CLS or not
    text_config = config.text_config.__class__.from_dict(config.text_config.to_dict())
    tokenizer, image_token_id, add_row = _export_tokenizer(processor, config.image_token_id, text_config)
    llava_config = LlavaConfig(
        vision_config=CLIPVisionConfig(**tower.vision_config),
        text_config=text_config,
        image_token_id=image_token_id,
        image_seq_length=config.num_image_tokens,
        vision_feature_layer=tower.feature_layer,
        vision_feature_select_strategy=select,
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    with no_init_weights():
        llava = LlavaForConditionalGeneration(llava_config)
    _load_exact(llava, _export_state(model, tower.name, add_row))
    llava.generation_config = model.generation_config

    image_processor = processor.image_processor
    llava_processor = LlavaProcessor(
        image_processor=LlavaImageProcessorPil(**{k: v for k, v in image_processor.to_dict().items()
                                                   if k != "image_processor_type"}),
        tokenizer=tokenizer,
        patch_size=tower.patch_size,
        vision_feature_select_strategy=select,
        num_additional_image_tokens=1 if tower.drop_prefix_tokens else 0,
    )
    return llava, llava_processor


def _baseline_tower(config: MofLlavaConfig) -> TowerSpec:
    """The single CLIP tower of a baseline model; anything else has no llava-hf counterpart."""
    spec = config.mixer_spec
    towers = config.towers
    lion_parts = spec.aggregator is not None or config.tag_hint_token_id is not None
    if spec.mode != "none" or spec.adapter != "mlp2x_gelu" or len(towers) != 1 or lion_parts:
        raise ConversionError(
            "only baseline models (one tower, mixer 'none', adapter 'mlp2x_gelu', no aggregator, no tag soft "
            "prompt) map onto "
            "LlavaForConditionalGeneration; "
            f"this one has mixer {config.mixer} and towers {[t.name for t in towers]}"
        )
    tower = towers[0]
    if not tower.vision_config.get("model_type", "").startswith("clip"):
        raise ConversionError(f"llava-hf expects a CLIP vision tower, this one is {tower.vision_config.get('model_type')}")
    return tower


def _export_tokenizer(processor: MofLlavaProcessor, image_token_id: int, text_config):
    """(tokenizer, image token id, whether a vocabulary row is added); grows `text_config` to match."""
    tokenizer = processor.tokenizer
    vocab_size = text_config.vocab_size
    if 0 <= image_token_id < vocab_size:
        return tokenizer, image_token_id, False
    tokenizer = load_tokenizer(_tokenizer_dir(processor))
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_token_id > vocab_size:
        raise ConversionError(
            f"<image> got id {image_token_id} but the LLM vocabulary has {vocab_size} rows; "
            "the tokenizer and the LLM do not match"
        )
    # An id inside a padded vocabulary reuses an unused row; one past the end needs a new row.
    add_row = image_token_id == vocab_size
    if add_row:
        text_config.vocab_size = vocab_size + 1
    return tokenizer, image_token_id, add_row


def _export_state(
    model: MofLlavaForConditionalGeneration, tower_name: str, add_row: bool
) -> dict[str, torch.Tensor]:
    """The model's weights under llava-hf's names, with a zero row appended when `add_row`."""
    llm = model.language_model
    body = getattr(llm, llm.base_model_prefix).state_dict()
    head = llm.get_output_embeddings().state_dict()
    if add_row:
        embed_key = next(k for k in body if k.endswith("embed_tokens.weight"))
        body[embed_key] = _append_zero_row(body[embed_key])
        head["weight"] = _append_zero_row(head["weight"])
    state = {}
    state.update(_prefixed("model.vision_tower.", model.vision_towers[tower_name].encoder.state_dict()))
    state.update(_prefixed("model.multi_modal_projector.linear_1.", model.mixer.adapters[tower_name][0].state_dict()))
    state.update(_prefixed("model.multi_modal_projector.linear_2.", model.mixer.adapters[tower_name][2].state_dict()))
    state.update(_prefixed("model.language_model.", body))
    state.update(_prefixed("lm_head.", head))
    return state


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


def _materialise(
    config: MofLlavaConfig,
    state: dict[str, torch.Tensor],
    llm_body: dict[str, torch.Tensor],
    lm_head: dict[str, torch.Tensor],
) -> MofLlavaForConditionalGeneration:
    with no_init_weights():
        model = MofLlavaForConditionalGeneration(config)
    llm = model.language_model
    state = dict(state)
    state.update(_prefixed(f"language_model.{llm.base_model_prefix}.", llm_body))
    head_name = next(name for name, module in llm.named_children() if module is llm.get_output_embeddings())
    state.update(_prefixed(f"language_model.{head_name}.", lm_head))
    _load_exact(model, state)
    model.tie_weights()
    return model


def _load_exact(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load every parameter; the only keys allowed to be absent are tied copies of present ones."""
    own = model.state_dict()
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = sorted(set(own) - set(state) - tied)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConversionError(f"weights do not match the model: missing {missing[:10]}, unexpected {unexpected[:10]}")
    model.load_state_dict(state, strict=False)


def _append_zero_row(weight: torch.Tensor) -> torch.Tensor:
    return torch.cat([weight, weight.new_zeros(1, weight.shape[1])], dim=0)


def _read_weights(src: Path) -> dict[str, torch.Tensor]:
    files = sorted(src.glob("*.safetensors"))
    weights: dict[str, torch.Tensor] = {}
    if files:
        for file in files:
            weights.update(load_file(str(file)))
    else:
        files = sorted(src.glob("pytorch_model*.bin"))
        for file in files:
            weights.update(torch.load(file, map_location="cpu", weights_only=True))
    if not files:
        raise ConversionError(f"{src}: no *.safetensors or pytorch_model*.bin weight files")
    return weights


def _encoder_state(path: str) -> dict[str, torch.Tensor]:
    encoder_class = AutoModel._model_mapping[type(_vision_config(path))]
    return _load_complete(encoder_class, path).state_dict()


def _stats_or_clip_default(path, vision_config) -> dict[str, Any]:
    try:
        return _preprocessing_stats(str(path))
    except Exception:  # a llava-hf dir without preprocessor config: LLaVA-1.5 uses OpenAI CLIP statistics
        from .model.configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

        return {"image_size": vision_config.image_size, "image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD}


def _tokenizer_dir(processor: MofLlavaProcessor) -> str:
    path = processor.tokenizer.name_or_path
    if not path:
        raise ConversionError("cannot re-load the tokenizer to add <image>: save the processor first")
    return path



@dataclass(frozen=True)
class ConvertJob:
    """`mof-llava convert`: read `src` in `source_format` (import) or write `out` in `target_format`
    (export of a baseline MoF-LLaVA model); exactly one of the two formats is given."""

    src: str | Path
    out: str | Path
    source_format: str | None = None  # llava-hf | llava | mmvp
    target_format: str | None = None  # llava-hf
    vision_tower: str | None = None  # CLIP checkpoint when SRC holds no CLIP weights
    dino_tower: str | None = None  # transformers DINOv2 checkpoint for the mmvp layout


def convert(job: ConvertJob) -> str:
    """Convert and save; returns the line the command prints (what was written where)."""
    if (job.source_format is None) == (job.target_format is None):
        raise ConversionError("give one of source_format (import) and target_format (export)")
    towers = {"vision_tower": job.vision_tower, "dino_tower": job.dino_tower}
    if job.target_format:
        model = MofLlavaForConditionalGeneration.from_pretrained(job.src)
        out_model, out_processor = export_llava_hf(model, MofLlavaProcessor.from_pretrained(job.src))
    elif job.source_format == "llava-hf":
        out_model, out_processor = import_llava_hf(job.src)
    elif is_projector_folder(job.src):
        from .model.adapter_artifact import save_adapters

        model = import_projector(job.src, layout=job.source_format, **towers)
        save_adapters(model, job.out)
        return (
            f"wrote adapters artifact (mixer {model.config.mixer['mode']}) to {job.out}; "
            f"start stage 2 with model.adapters_from={job.out}"
        )
    else:
        out_model, out_processor = import_llava_original(job.src, layout=job.source_format, **towers)
    out_model.save_pretrained(job.out)
    out_processor.save_pretrained(job.out)
    if job.target_format:
        return f"wrote llava-hf ({type(out_model).__name__}) to {job.out}"
    return f"wrote MoF-LLaVA (mixer {out_model.config.mixer['mode']}) to {job.out}"
