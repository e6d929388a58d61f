"""The paper's vision towers, each decided here once: checkpoint, feature layer, prefix dropping,
input normalisation and position-table resize.

- `CLIP_L14_336`: LLaVA-1.5's tower, `openai/clip-vit-large-patch14-336`, the output of the
  second-to-last block (`hidden_states[-2]`), CLS dropped, CLIP's statistics.
- `DINOV2_L14`: `facebook/dinov2-large`, the output of the last block before the final LayerNorm
  (`hidden_states[-1]`, torch.hub's `x_prenorm`), CLS dropped, fed the same CLIP-normalised image
  (`normalization="shared"`), its 37 x 37 position table resized the torch.hub way
  (`pos_interpolation="hub"`, see docs/architecture.md "DINOv2 position embeddings").

A preset is used three ways: as a checkpoint recipe (`TowerRecipe(preset="dinov2_l14")`, and
`preset: dinov2_l14` on a tower in a YAML config, explicit keys overriding), and as a checkpoint-free
`TowerSpec` (`preset.spec()`: data checks and benchmarks that need only the token count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, MofLlavaConfigError, PosInterpolation, TowerSpec

Normalization = Literal["shared", "own"]


@dataclass(frozen=True)
class TowerPreset:
    """A released vision checkpoint and how the paper takes its features (see `TowerRecipe`)."""

    name: str  # the tower name models use for it
    path: str  # hub id of the checkpoint
    feature_layer: int
    drop_prefix_tokens: bool
    normalization: Normalization
    pos_interpolation: PosInterpolation
    # The released architecture (transformers config fields), for checkpoint-free configs.
    architecture: dict[str, Any] = field(default_factory=dict)

    def recipe_fields(self) -> dict[str, Any]:
        """The `TowerRecipe` fields this preset decides."""
        return {
            "name": self.name,
            "path": self.path,
            "feature_layer": self.feature_layer,
            "drop_prefix_tokens": self.drop_prefix_tokens,
            "normalization": self.normalization,
            "pos_interpolation": self.pos_interpolation,
        }

    def spec(self, image_size: int | None = None, name: str | None = None) -> TowerSpec:
        """This tower as a `TowerSpec` without its checkpoint, its input CLIP-normalised (the paper's
        pixels). `image_size` changes the configured input size of a CLIP tower (which must match it)."""
        from transformers import AutoConfig

        architecture = dict(self.architecture)
        if image_size is not None and architecture["model_type"].startswith("clip"):
            architecture["image_size"] = image_size
        vision_config = AutoConfig.for_model(**architecture).to_diff_dict()
        vision_config.pop("transformers_version", None)
        return TowerSpec(
            name=name or self.name,
            vision_config=vision_config,
            feature_layer=self.feature_layer,
            drop_prefix_tokens=self.drop_prefix_tokens,
            image_mean=OPENAI_CLIP_MEAN,
            image_std=OPENAI_CLIP_STD,
            pos_interpolation=self.pos_interpolation,
        )


CLIP_L14_336 = TowerPreset(
    name="clip",
    path="openai/clip-vit-large-patch14-336",
    feature_layer=-2,
    drop_prefix_tokens=True,
    normalization="shared",  # the primary tower: the pixels are normalised with its own statistics
    pos_interpolation="transformers",
    architecture={
        "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
        "projection_dim": 768, "hidden_act": "quick_gelu",
    },  # fmt: skip
)

DINOV2_L14 = TowerPreset(
    name="dinov2",
    path="facebook/dinov2-large",
    feature_layer=-1,
    drop_prefix_tokens=True,
    normalization="shared",
    pos_interpolation="hub",
    architecture={
        "model_type": "dinov2", "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
        "mlp_ratio": 4, "image_size": 518, "patch_size": 14,
    },  # fmt: skip
)

# The names YAML configs use (`preset: clip_l14_336`).
PRESETS: dict[str, TowerPreset] = {"clip_l14_336": CLIP_L14_336, "dinov2_l14": DINOV2_L14}


def get_preset(name: str) -> TowerPreset:
    if name not in PRESETS:
        raise MofLlavaConfigError(f"unknown tower preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
