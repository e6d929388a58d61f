"""`mof-llava data check` as one call: the dataset, where its tokenizer and visual token count come
from, and the length settings, in one typed job.

    from mof_llava.data.check_job import CheckJob, check
    report = check(CheckJob("mix665k.json", tokenizer="lmsys/vicuna-7b-v1.5", mixer="interleave"))
    print(format_report(report)); report.ok
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..conversation import TEMPLATES
from ..options import option
from .samples import LENGTH_BUDGETS, TRUNCATIONS

if TYPE_CHECKING:  # loads on first use: `mof-llava --help` reads only the options (no pydantic)
    from .check import DataReport
    from .preference_check import PreferenceReport


class CheckOptionsError(ValueError):
    """Options of a data check that do not go together; the message names the flags."""


CHECK = frozenset({"check"})  # the `data` subcommand whose flags these options are
MIXERS = ("none", "additive", "interleave", "concat")


@dataclass(frozen=True)
class CheckJob:
    """The dataset, where the tokenizer and visual token count come from (`model`, or `tokenizer` and
    `mixer`), and training's settings; a setting left None is DataConfig's default (read on use, so
    that building the parser does not load the config types). The option fields are `data check`'s
    flags."""

    data: str | Path  # LLaVA JSON array or JSONL file
    model: str | None = None  # a saved MoF-LLaVA model directory (its processor is used), or
    tokenizer: str | None = None  # an LLM tokenizer with the paper's towers under `mixer`
    mixer: str | None = option(
        None,
        "with --tokenizer: the mixer of the paper's towers (CLIP ViT-L/14 + DINOv2 ViT-L/14), which decides "
        "the visual tokens per image (none/additive/concat: 576, interleave: 1152 at 336 px)",
        choices=MIXERS,
        actions=CHECK,
    )
    image_size: int | None = option(
        None, "with --tokenizer: image side in pixels (default: CLIP's 336)", actions=CHECK
    )
    image_folder: str | Path | None = option(None, "root of the records' relative image paths", actions=CHECK)
    template: str | None = option(
        None,
        "conversation template the data is rendered with: vicuna_v1 (default, LLaVA-1.5's stage 2), "
        "llava_v1, or plain (stage 1: one image and its caption)",
        choices=tuple(TEMPLATES),
        actions=CHECK,
    )
    max_length: int | None = option(None, "token budget per sample (model_max_length)", actions=CHECK)
    length_budget: str | None = option(
        None,
        "what --max-length counts: every token the LLM reads (expanded, default) or the text and one "
        "token per image (text, the MMVP fork); the report compares all settings",
        choices=LENGTH_BUDGETS,
        actions=CHECK,
    )
    truncation: str | None = option(
        None,
        "how a sample over budget is shortened: whole trailing rounds (default) or cut mid-round (tokens)",
        choices=TRUNCATIONS,
        actions=CHECK,
    )
    tag_prompt: bool = option(
        False,
        "measure the lengths with LION's tag prompt before each image record's first question (data.tag_prompt, "
        "all tags kept); image records without 'tags' are then reported as malformed",
        actions=CHECK,
    )
    moa_tasks: tuple[str, ...] = option(
        (),
        "a task name a record's 'task' may take (repeat the flag for each; default: the --model's moa.tasks, "
        "else image and region); a record with another is reported as malformed",
        actions=CHECK,
        metavar="TASK",
    )
    check_images: bool = True  # the flag is --no-images
    workers: int | None = option(None, "processes for tokenising and image checks", actions=CHECK)
    cache_dir: str | Path | None = option(
        None, "where the record index and token lengths are cached", actions=CHECK
    )


def load_processor(job: CheckJob):
    """The processor whose tokenizer and visual token count the check uses (None for a preference
    file given neither: its check needs no tokenizer)."""
    from .. import MofLlavaProcessor
    from ..paths import check_model_path
    from .check import paper_processor
    from .preference_check import is_preference_file

    if job.model is None and job.tokenizer is None and is_preference_file(job.data):
        return None

    if job.tokenizer and not job.mixer:
        raise CheckOptionsError("--tokenizer needs --mixer (or pass --model)")
    if job.model and job.mixer:
        raise CheckOptionsError("--mixer is for --tokenizer; a saved --model already has its mixer")
    if (job.model is None) == (job.tokenizer is None):
        raise CheckOptionsError("give one of --model and --tokenizer")
    if job.model:
        check_model_path(job.model, "--model")
        return MofLlavaProcessor.from_pretrained(job.model)
    check_model_path(job.tokenizer, "--tokenizer")
    return paper_processor(job.tokenizer, job.mixer, job.image_size, tag_soft_prompt=job.tag_prompt)


def moa_tasks(job: CheckJob) -> tuple[str, ...] | None:
    """The task names the records may carry: `--moa-tasks`, else the saved model's moa.tasks (None:
    the default ones, for a tokenizer or a model without a mixture of adapters)."""
    import json

    from ..model.configuration import MoaSpec

    if job.moa_tasks:
        return tuple(job.moa_tasks)
    config = Path(job.model) / "config.json" if job.model else None
    moa = json.loads(config.read_text()).get("moa") if config is not None and config.is_file() else None
    return MoaSpec.from_dict(moa).tasks if moa else None


TRAINING_SETTINGS = ("template", "max_length", "length_budget", "truncation")  # defaults: DataConfig's


def with_training_defaults(job: CheckJob) -> CheckJob:
    """`job` with each setting left None set to DataConfig's default."""
    from .config import DataConfig

    unset = [name for name in TRAINING_SETTINGS if getattr(job, name) is None]
    return replace(job, **{name: getattr(DataConfig, name) for name in unset})


def check(job: CheckJob, processor=None) -> DataReport | PreferenceReport:
    """Validate every record and image and measure the token lengths; `processor` defaults to
    `load_processor(job)`. A preference file (BPO's records or flat pairs) gets its own checks."""
    from .check import check_dataset
    from .preference_check import check_preference, is_preference_file
    from .tag_prompt import TagPromptConfig

    if is_preference_file(job.data):
        return check_preference(job.data, job.image_folder, job.check_images)
    job = with_training_defaults(job)
    return check_dataset(
        job.data,
        processor if processor is not None else load_processor(job),
        image_folder=job.image_folder,
        template=job.template,
        max_length=job.max_length,
        length_budget=job.length_budget,
        truncation=job.truncation,
        tag_prompt=TagPromptConfig() if job.tag_prompt else None,
        check_images=job.check_images,
        num_workers=job.workers,
        cache_dir=job.cache_dir,
        moa_tasks=moa_tasks(job),
    )
