"""`DataConfig`: what a training run reads and how, with LLaVA-1.5's per-stage defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field

from ..conversation import TEMPLATES
from ..typed_config import STRICT_KEYS, check, validate
from .images import DEFAULT_IMAGE_LOADING, ImageLoading, check_image_loading
from .samples import LengthBudget, Truncation, check_length_settings
from .tag_prompt import TagPromptConfig

AspectRatio = Literal["pad", "crop"]


def _known_template(name: str) -> str:
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; choose one of {sorted(TEMPLATES)}")
    return name


def _square_is_crop(value: object) -> object:
    if value == "square":
        raise ValueError("must be 'pad' or 'crop', got 'square' (LLaVA's 'square', resize and centre-crop, is 'crop' here)")
    return value


Template = Annotated[str, AfterValidator(_known_template)]
BadImagePolicy = Literal["fail", "skip"]
BatchArrangement = Literal["sorted", "balanced"]
Stage = Literal["pretrain", "finetune"]

# LLaVA-1.5's recipes (scripts/v1_5/pretrain.sh, finetune.sh): stage 1 uses the `plain` template and
# LLaVA's default `image_aspect_ratio` ("square": resize the short side, centre-crop), stage 2 the
# `v1` (vicuna_v1) template, `--image_aspect_ratio pad` and `--group_by_modality_length True`.
STAGE_DEFAULTS: dict[str, dict[str, object]] = {
    "pretrain": {"template": "plain", "image_aspect_ratio": "crop", "group_by_modality_length": False},
    "finetune": {"template": "vicuna_v1", "image_aspect_ratio": "pad", "group_by_modality_length": True},
}
# BPO's preference stage (scripts/finetune_bpo.sh) reads its pairs as stage 2 reads conversations.
STAGE_DEFAULTS["preference"] = STAGE_DEFAULTS["finetune"]


@dataclass(frozen=True)
class DataConfig:
    """
    data_path: LLaVA JSON array or JSONL file.
    image_folder: root that the records' relative `image` paths are resolved against.
    template: conversation template (`plain` for stage 1, `vicuna_v1` for stage 2).
    image_aspect_ratio: `pad` centres the picture on a square of the CLIP mean colour (122, 116, 104)
        before resizing; `crop` resizes the short side and centre-crops (LLaVA's "square").
    max_length: token budget per sample (LLaVA's model_max_length).
    length_budget: what max_length counts: `expanded` (default) every token the LLM reads, visual
        placeholders included (LLaVA-1.5 cuts after merging the image); `text` the text tokens and
        one per image (the MMVP fork cuts only before expansion: sequences can run past max_length by
        the visual tokens less one).
    truncation: how a sample over budget is shortened: `rounds` (default) drops whole trailing rounds;
        `tokens` cuts at the budget mid-round, as LLaVA and the MMVP fork do. See samples.py.
    on_bad_image: a missing or undecodable image either stops training naming the file (`fail`) or
        the sample is skipped, counted and reported (`skip`). Never replaced by another sample.
    image_loading: how image files become RGB pictures (see images.py): `reference` (default) is
        PIL's `.convert("RGB")` as in LLaVA; `viewer` applies EXIF orientation and composites
        transparency over white. Evaluate with the same setting the model was trained with.
    group_by_modality_length: LLaVA's grouped sampler (see sampler.py) instead of a plain shuffle.
    batch_arrangement: how the grouped sampler arranges an optimizer step's samples into per-device
        batches: `sorted` (neighbouring lengths, least padding) or `balanced` (LLaVA's: equal token
        totals per batch). Same samples per step either way.
    packing: lay each micro-batch's samples back to back in one row, attention isolated per sample,
        with micro-batches of equal token totals on every rank (see packing.py, docs/training.md).
    packing_tokens: with packing, the most tokens a micro-batch may hold; steps then carry as many
        samples as fit (fewer steps per epoch). Unset: the recipe's samples per step, packed.
    cache_dir: where the record index and token lengths are cached (default: see cache.py).
    num_proc: processes for the one-time tokenisation pass (default: all cores).
    task: the task of records without a `task` field, for LION's mixture of adapters (a name of
        `model.moa.tasks`, e.g. `image` or `region`). Unset: with moa, every record needs one.
    tag_prompt: LION's tag prompt (tag_prompt.py; off when unset, `{}` for all tags as given): each
        image record's `tags` become "According to <tag_hint>, you are allowed to use or partially use
        the following tags: [...]. " before its first question; the model needs
        `model.tag_soft_prompt: true` for the hint. Takes `dropout`, `shuffle` and `seed`.
    """

    __pydantic_config__ = STRICT_KEYS

    data_path: str
    image_folder: str | None = None
    template: Template = "vicuna_v1"
    image_aspect_ratio: Annotated[AspectRatio, BeforeValidator(_square_is_crop)] = "pad"
    max_length: Annotated[int, Field(gt=0)] = 2048
    length_budget: LengthBudget = "expanded"
    truncation: Truncation = "rounds"
    on_bad_image: BadImagePolicy = "fail"
    image_loading: ImageLoading = DEFAULT_IMAGE_LOADING
    group_by_modality_length: bool = True
    batch_arrangement: BatchArrangement = "sorted"
    packing: bool = False
    packing_tokens: int | None = None
    cache_dir: str | None = None
    num_proc: int | None = None
    task: str | None = None
    tag_prompt: TagPromptConfig | None = None

    def __post_init__(self) -> None:
        # The shared checks of images.py and samples.py first: their messages name their choices.
        check_image_loading(self.image_loading, "data.image_loading")
        check_length_settings(self.length_budget, self.truncation, "data.")
        check(self, "data.")  # built in code as well as read from a file
        if self.tag_prompt is not None and self.template == "plain":
            raise ValueError("data.tag_prompt needs a chat template: 'plain' drops the question the tags go before")
        if self.packing_tokens is not None and not self.packing:
            raise ValueError(f"data.packing_tokens = {self.packing_tokens} needs data.packing: true")
        if self.packing_tokens is not None and self.packing_tokens < self.max_length:
            raise ValueError(
                f"data.packing_tokens = {self.packing_tokens} is below data.max_length ({self.max_length}): "
                "a sample could not fit"
            )

    @classmethod
    def for_stage(cls, stage: Stage, data_path: str, **overrides) -> DataConfig:
        """LLaVA-1.5's settings for `stage` ("pretrain" or "finetune"), then `overrides`."""
        if stage not in STAGE_DEFAULTS:
            raise ValueError(f"unknown stage {stage!r}; choose one of {sorted(STAGE_DEFAULTS)}")
        return validate(cls, {"data_path": data_path, **STAGE_DEFAULTS[stage], **overrides}, what="data settings")
