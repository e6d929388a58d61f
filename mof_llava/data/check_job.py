"""`mof-llava data check` as one call: the dataset, where its tokenizer and visual token count come
from, and the length settings, in one typed job.

    from mof_llava.data.check_job import CheckJob, check
    report = check(CheckJob("mix665k.json", tokenizer="lmsys/vicuna-7b-v1.5", mixer="interleave"))
    print(format_report(report)); report.ok
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .check import DataReport, check_dataset


class CheckOptionsError(ValueError):
    """Options of a data check that do not go together; the message names the flags."""


@dataclass(frozen=True)
class CheckJob:
    data: str | Path  # LLaVA JSON array or JSONL file
    model: str | None = None  # a saved MoF-LLaVA model directory (its processor is used), or
    tokenizer: str | None = None  # an LLM tokenizer with the paper's towers under `mixer`
    mixer: str | None = None  # none | additive | interleave | concat (with `tokenizer` only)
    image_size: int | None = None  # with `tokenizer`; None: CLIP's 336 px
    image_folder: str | Path | None = None
    template: str = "vicuna_v1"
    max_length: int = 2048
    length_budget: str = "expanded"
    truncation: str = "rounds"
    check_images: bool = True
    workers: int | None = None
    cache_dir: str | Path | None = None


def load_processor(job: CheckJob):
    """The processor whose tokenizer and visual token count the check uses."""
    from .. import MofLlavaProcessor
    from ..paths import check_model_path
    from .check import paper_processor

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
    return paper_processor(job.tokenizer, job.mixer, job.image_size)


def check(job: CheckJob, processor=None) -> DataReport:
    """Validate every record and image and measure the token lengths; `processor` defaults to
    `load_processor(job)`."""
    return check_dataset(
        job.data,
        processor if processor is not None else load_processor(job),
        image_folder=job.image_folder,
        template=job.template,
        max_length=job.max_length,
        length_budget=job.length_budget,
        truncation=job.truncation,
        check_images=job.check_images,
        num_workers=job.workers,
        cache_dir=job.cache_dir,
    )
