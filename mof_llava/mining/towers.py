"""Image towers for mining: one pooled, L2-normalised embedding per image.

A tower is a transformers vision checkpoint (local folder or hub id) and a pooling:

| pooling        | what it is                                                        | default for  |
|----------------|-------------------------------------------------------------------|--------------|
| `image_embeds` | CLIP's projected image embedding (the vector CLIP compares with   | CLIP         |
|                | text; `CLIPVisionModelWithProjection.image_embeds`)               |              |
| `pooler`       | the model's pooled output: DINOv2's CLS token after the final     | DINOv2,      |
|                | LayerNorm (what DINOv2 itself returns as the image embedding);    | SigLIP,      |
|                | SigLIP's attention-pooled head; CLIP's CLS after post-LayerNorm,  | others       |
|                | unprojected                                                       |              |
| `cls`          | first token of the last hidden state (for DINOv2 the same as      |              |
|                | `pooler`; for CLIP before the post-LayerNorm)                     |              |
| `mean`         | mean of the patch tokens of the last hidden state (CLS and        |              |
|                | register tokens left out)                                         |              |

Each tower preprocesses with its own image processor, read from `preprocessor_config.json` in the
checkpoint with transformers' PIL backend (no torchvision needed). Embeddings are L2-normalised
before they are stored, so an inner product of two stored rows is their cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

from mof_llava.mining.errors import MiningError

POOLINGS = ("image_embeds", "pooler", "cls", "mean")
_CLIP_TYPES = {"clip", "clip_vision_model"}


@dataclass(frozen=True)
class EmbeddingTowerSpec:
    """A checkpoint and the pooling that gives one embedding per image. Not the model's `TowerSpec`
    (`mof_llava.model.configuration`): that one says which hidden layer's patch tokens an LLM receives,
    with the encoder's config inline; mining compares whole-image embeddings of any checkpoint (MMVP
    mined with CLIP ViT-L/14 at 224 px, not the model's 336 px tower), preprocessed its own way."""

    name: str  # the name the embeddings are stored under (e.g. "clip", "dinov2")
    model: str  # local checkpoint folder or hub id
    pooling: str = "auto"  # one of POOLINGS, or "auto" for the model's default

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise MiningError(f"tower name {self.name!r}: use letters, digits, '-' and '_' only")
        if self.pooling != "auto" and self.pooling not in POOLINGS:
            raise MiningError(
                f"tower {self.name}: unknown pooling {self.pooling!r} (choose from {', '.join(POOLINGS)})"
            )


# The old name, for one release.
TowerSpec = EmbeddingTowerSpec


class Tower:
    """A loaded tower: `preprocess(image) -> pixel tensor`, `embed(pixels) -> unit vectors`."""

    def __init__(self, spec: EmbeddingTowerSpec, device: str = "cpu", dtype: str = "float32"):
        import torch
        from transformers import AutoConfig, AutoImageProcessor

        self.spec = spec
        try:
            config = AutoConfig.from_pretrained(spec.model)
        except OSError as err:
            raise MiningError(
                f"tower {spec.name}: cannot load the model config from {spec.model!r} ({err})"
            ) from None
        model_type = config.model_type
        self.pooling = _default_pooling(model_type) if spec.pooling == "auto" else spec.pooling
        model_class = _model_class(model_type, self.pooling)
        model, info = model_class.from_pretrained(
            spec.model, output_loading_info=True, dtype=getattr(torch, dtype), **_vision_config(config)
        )
        missing = sorted(info.get("missing_keys", ()))
        if missing:
            hint = ""
            if self.pooling == "image_embeds" and any("projection" in k for k in missing):
                hint = (
                    f" (a vision-only checkpoint without CLIP's projection: use --pooling {spec.name}=pooler)"
                )
            raise MiningError(f"tower {spec.name}: {spec.model} lacks weights {', '.join(missing[:5])}{hint}")
        self.model = model.to(device).eval()
        self.device = device
        self.patch_size = getattr(getattr(config, "vision_config", config), "patch_size", None)
        try:
            self.processor = AutoImageProcessor.from_pretrained(spec.model, backend="pil")
        except OSError as err:
            raise MiningError(
                f"tower {spec.name}: no image processor config in {spec.model!r} ({err})"
            ) from None
        self.dim = self._probe_dim()

    def preprocess(self, image):
        """PIL RGB image -> (3, H, W) float tensor, as the tower's image processor prepares it."""
        return self.processor(images=[image], return_tensors="pt")["pixel_values"][0]

    def embed(self, pixels):
        """(B, 3, H, W) -> (B, dim) float32 unit vectors on the CPU."""
        import torch

        with torch.inference_mode():
            pixels = pixels.to(self.device, dtype=self.model.dtype)
            output = self.model(pixel_values=pixels)
            pooled = self._pool(output, pixels.shape[-2:]).float()
            return torch.nn.functional.normalize(pooled, dim=-1).cpu()

    def _pool(self, output, image_hw):
        if self.pooling == "image_embeds":
            return output.image_embeds
        if self.pooling == "pooler":
            if getattr(output, "pooler_output", None) is None:
                raise MiningError(
                    f"tower {self.spec.name}: {type(self.model).__name__} has no pooled output; choose cls or mean"
                )
            return output.pooler_output
        hidden = output.last_hidden_state
        prefix = self._prefix_tokens(hidden.shape[1], image_hw)
        if self.pooling == "cls":
            if prefix < 1:
                raise MiningError(
                    f"tower {self.spec.name}: {type(self.model).__name__} has no CLS token; choose pooler or mean"
                )
            return hidden[:, 0]
        return hidden[:, prefix:].mean(dim=1)

    def _prefix_tokens(self, tokens: int, image_hw) -> int:
        """Tokens before the patch grid (CLS, registers): sequence length minus the patch count."""
        if not self.patch_size:
            raise MiningError(
                f"tower {self.spec.name}: unknown patch size; cannot tell patch tokens from CLS tokens"
            )
        h, w = int(image_hw[0]), int(image_hw[1])
        return tokens - (h // self.patch_size) * (w // self.patch_size)

    def _probe_dim(self) -> int:
        """Run one blank image through the tower: checks the pooling works and gives the dimension."""
        from PIL import Image

        blank = Image.new("RGB", (64, 64), (128, 128, 128))
        return int(self.embed(self.preprocess(blank)[None]).shape[-1])


def _vision_config(config) -> dict:
    """A full CLIPModel's projection width is its top-level `projection_dim`; the vision sub-config
    keeps its own default (512), which the projection must not be built with."""
    if config.model_type != "clip":
        return {}
    vision = config.vision_config
    vision.projection_dim = config.projection_dim
    return {"config": vision}


def _default_pooling(model_type: str) -> str:
    return "image_embeds" if model_type in _CLIP_TYPES else "pooler"


def _model_class(model_type: str, pooling: str):
    import transformers

    if model_type in _CLIP_TYPES:
        return (
            transformers.CLIPVisionModelWithProjection
            if pooling == "image_embeds"
            else transformers.CLIPVisionModel
        )
    if pooling == "image_embeds":
        raise MiningError(
            f"pooling image_embeds is CLIP's projected embedding; a {model_type} model has none"
        )
    vision_only = {
        "siglip": "SiglipVisionModel",
        "siglip_vision_model": "SiglipVisionModel",
        "siglip2": "Siglip2VisionModel",
        "siglip2_vision_model": "Siglip2VisionModel",
    }
    if model_type in vision_only:
        return getattr(transformers, vision_only[model_type])
    return transformers.AutoModel
