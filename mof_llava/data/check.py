"""`mof-llava data check`: everything to know about a dataset before paying for GPUs.

Malformed records, samples per modality, missing or undecodable images, the token-length
distribution with the model's visual token count, how many samples `max_length` shortens, and which
would have nothing to train on. Uses the same index, tokenisation and image loader as training.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..conversation import get_template
from .config import DataConfig
from .images import ImageLoadError, load_rgb_image
from .lengths import MALFORMED, PROBLEMS, token_stats
from .record_file import RecordFile
from .samples import LENGTH_BUDGETS, TRUNCATIONS, TextEncoder

_EXAMPLES = 20
# The `DataConfig` settings that change what a check reports.
CHECK_SETTINGS = ("template", "max_length", "length_budget", "truncation", "tag_prompt")
_PERCENTILES = (0, 10, 50, 90, 95, 99, 100)


@dataclass
class LengthSummary:
    count: int
    mean: float
    percentiles: dict[str, int]  # "p50" -> tokens

    @classmethod
    def of(cls, lengths: np.ndarray) -> LengthSummary:
        if len(lengths) == 0:
            return cls(0, 0.0, {})
        values = np.percentile(lengths, _PERCENTILES, method="nearest")
        return cls(
            len(lengths), float(np.mean(lengths)), {f"p{p}": int(v) for p, v in zip(_PERCENTILES, values)}
        )


@dataclass
class FittingSummary:
    """What one pair of length settings (samples.py) does to the data."""

    rounds_lost: int  # rounds not trained on in full (dropped, cut, or in a sample left out)
    rounds_total: int
    samples_shortened: int
    samples_left_out: int  # nothing to train on


@dataclass
class DataReport:
    data_path: str
    template: str
    max_length: int
    num_image_tokens: int
    length_budget: str
    truncation: str
    records: int = 0
    malformed: list[str] = field(default_factory=list)
    with_image: int = 0
    text_only: int = 0
    with_tags: int = 0  # image records carrying `tags` (LION's tag prompt)
    tags_per_record: float = 0.0  # mean over those records
    moa_tasks: list[str] = field(default_factory=list)  # the task names a record's `task` may take
    by_task: dict[str, int] = field(default_factory=dict)  # usable records per `task` ("unset": none given)
    by_box_frame: dict[str, int] = field(default_factory=dict)  # region records per `box_frame` (boxes.py)
    tag_prompt: bool = False  # lengths measured with the tag prompt
    images_checked: bool = False
    unique_images: int = 0
    bad_images: list[str] = field(default_factory=list)  # "path: reason (first record using it)"
    num_bad_images: int = 0
    samples_with_bad_images: int = 0
    lengths_image: LengthSummary | None = None  # full conversation, before fitting into max_length
    lengths_text: LengthSummary | None = None
    truncated: int = 0
    rounds_dropped: int = 0  # samples shortened by dropping whole trailing rounds
    nothing_supervised: dict[str, int] = field(default_factory=dict)  # reason -> count
    nothing_supervised_examples: list[str] = field(default_factory=list)
    # "length_budget/truncation" -> its effect, for every pair of settings
    by_length_setting: dict[str, FittingSummary] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.malformed and not self.num_bad_images

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save_json(self, path: str | Path) -> None:
        """Write `to_json()` to `path` atomically: a temporary file beside it, then `os.replace`, so an
        interrupted write never leaves a truncated report (or destroys the previous one)."""
        write_text_atomic(path, self.to_json())


def check_dataset(
    data_path: str | Path,
    processor: TextEncoder,
    *,
    image_folder: str | Path | None = None,
    check_images: bool = True,
    num_workers: int | None = None,
    cache_dir: str | Path | None = None,
    moa_tasks: tuple[str, ...] | None = None,
    **settings,
) -> DataReport:
    """`settings`: the `DataConfig` fields the check uses (template, max_length, length_budget,
    truncation); what is not given takes `DataConfig`'s default, as training would. `moa_tasks`: the
    names a record's `task` may take (default: `moa.tasks`' default); another is malformed."""
    unknown = sorted(set(settings) - set(CHECK_SETTINGS))
    if unknown:
        raise TypeError(f"check_dataset: unknown settings {unknown}; it takes {list(CHECK_SETTINGS)}")
    config = DataConfig(data_path=str(data_path), **settings)  # defaults and checks of training's settings
    template, max_length = config.template, config.max_length
    length_budget, truncation = config.length_budget, config.truncation
    records = RecordFile(data_path, cache_dir, strict=False)
    report = DataReport(
        str(records.path), template, max_length, int(processor.num_image_tokens), length_budget, truncation,
        records=len(records),
    )
    by_setting = _stats_by_length_setting(
        records, get_template(template), processor, max_length, cache_dir, num_workers, config.tag_prompt
    )
    stats, template_errors = by_setting[f"{length_budget}/{truncation}"]
    report.by_length_setting = {name: _fitting_summary(rows) for name, (rows, _) in by_setting.items()}
    report.malformed = [str(e) for e in records.errors + template_errors]
    usable = stats["problem"] != MALFORMED  # neither malformed nor rejected by the template
    has_image = np.asarray(records.has_image, dtype=bool)
    report.with_image = int(np.count_nonzero(usable & has_image))
    report.text_only = int(np.count_nonzero(usable & ~has_image))
    report.tag_prompt = config.tag_prompt is not None
    _count_tags(report, records, np.flatnonzero(usable & has_image))
    _count_lion_fields(report, records, np.flatnonzero(usable), moa_tasks)
    full = np.asarray(stats["full_length"])
    report.lengths_image = LengthSummary.of(full[usable & has_image])
    report.lengths_text = LengthSummary.of(full[usable & ~has_image])
    shortened = usable & ((stats["length"] < full) | (stats["rounds_kept"] < stats["rounds_total"]))
    report.truncated = int(np.count_nonzero(shortened))
    report.rounds_dropped = int(np.count_nonzero(usable & (stats["rounds_kept"] < stats["rounds_total"])))
    empty = np.flatnonzero(usable & (stats["num_supervised"] == 0))
    for i in empty:
        reason = PROBLEMS[int(stats["problem"][i])] or "nothing supervised"
        report.nothing_supervised[reason] = report.nothing_supervised.get(reason, 0) + 1
    report.nothing_supervised_examples = [
        f"{records.location_with_id(int(i))}: {PROBLEMS[int(stats['problem'][i])]}" for i in empty[:_EXAMPLES]
    ]
    if check_images and report.with_image:
        if image_folder is None:
            raise ValueError(
                "the data has images: pass --image-folder (or --no-images to skip the image check)"
            )
        _check_images(report, records, np.flatnonzero(usable & has_image), Path(image_folder), num_workers)
    return report


def _stats_by_length_setting(records, template, processor, max_length, cache_dir, num_workers, tag_prompt) -> dict:
    """"length_budget/truncation" -> (token stats, records the template rejects), for every pair of
    settings: one tokenisation pass each (cached, so training with any of them reuses its pass)."""
    return {
        f"{budget}/{truncation}": token_stats(
            records, template, processor, max_length, cache_dir, num_workers, strict=False,
            length_budget=budget, truncation=truncation, tag_prompt=tag_prompt,
        )
        for budget in LENGTH_BUDGETS
        for truncation in TRUNCATIONS
    }


def _count_tags(report: DataReport, records: RecordFile, indices: np.ndarray) -> None:
    """How many image records carry `tags`, and how many on average (validated by the index already)."""
    counts = [len(tags) for i in indices if (tags := records.raw(int(i)).get("tags")) is not None]
    report.with_tags = len(counts)
    report.tags_per_record = float(np.mean(counts)) if counts else 0.0


def _count_lion_fields(
    report: DataReport, records: RecordFile, indices: np.ndarray, moa_tasks: tuple[str, ...] | None
) -> None:
    """Records per LION `task` and per REC `box_frame` (both validated as strings by the index); a task
    outside `moa_tasks` is malformed, as training's collator would stop on it."""
    from ..model.configuration import MoaSpec

    tasks = tuple(moa_tasks) if moa_tasks else MoaSpec().tasks
    report.moa_tasks = list(tasks)
    for i in indices:
        raw = records.raw(int(i))
        task = raw["task"].strip() if "task" in raw else None  # as the record parser keeps it
        report.by_task[task or "unset"] = report.by_task.get(task or "unset", 0) + 1
        if task is not None and task not in tasks:
            report.malformed.append(f"{records.location_with_id(int(i))}: task {task!r} is not one of {list(tasks)}")
        if "box_frame" in raw:
            report.by_box_frame[raw["box_frame"]] = report.by_box_frame.get(raw["box_frame"], 0) + 1


def _fitting_summary(stats: np.ndarray) -> FittingSummary:
    usable = stats["problem"] != MALFORMED  # neither malformed nor rejected by the template
    rows = stats[usable]
    left_out = rows["num_supervised"] == 0
    total = rows["rounds_total"].astype(np.int64)
    lost = np.where(left_out, total, total - rows["rounds_kept"])
    shortened = (rows["length"] < rows["full_length"]) | (rows["rounds_kept"] < rows["rounds_total"])
    return FittingSummary(
        int(lost.sum()), int(total.sum()), int(np.count_nonzero(shortened & ~left_out)), int(left_out.sum())
    )


def _check_images(
    report: DataReport, records: RecordFile, indices: np.ndarray, folder: Path, num_workers
) -> None:
    first_user: dict[str, int] = {}  # image -> first record using it
    uses: dict[str, int] = {}
    for i in indices:
        image = records.raw(int(i))["image"]
        first_user.setdefault(image, int(i))
        uses[image] = uses.get(image, 0) + 1
    images = list(first_user)
    paths = [str(folder / image) for image in images]
    workers = max(1, num_workers if num_workers is not None else (os.cpu_count() or 1))
    if workers == 1:
        problems = list(map(_image_problem, paths))
    else:
        chunk = max(1, min(256, len(paths) // (workers * 4)))
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            problems = list(pool.map(_image_problem, paths, chunksize=chunk))
    bad = [
        (image, path, problem) for image, path, problem in zip(images, paths, problems) if problem is not None
    ]
    report.images_checked = True
    report.unique_images = len(paths)
    report.num_bad_images = len(bad)
    report.samples_with_bad_images = sum(uses[image] for image, _, _ in bad)
    report.bad_images = [
        f"{path}: {problem} (used by {records.location_with_id(first_user[image])})"
        for image, path, problem in bad[:_EXAMPLES]
    ]


def _image_problem(path: str) -> str | None:
    try:
        load_rgb_image(path)
    except ImageLoadError as err:
        return err.reason
    return None


def format_report(report: DataReport) -> str:
    pct = lambda n, d: f"{100.0 * n / d:.2f}%" if d else "n/a"  # noqa: E731
    usable = report.with_image + report.text_only
    lines = [
        f"data      {report.data_path}",
        f"template  {report.template}, max_length {report.max_length} ({report.length_budget}/{report.truncation}), "
        f"{report.num_image_tokens} visual tokens per image",
        f"records   {report.records}: {report.with_image} with an image, {report.text_only} text-only, "
        f"{len(report.malformed)} malformed",
    ]
    prompt = "lengths below with the tag prompt" if report.tag_prompt else "tag prompt off"
    lines.append(
        f"tags      {report.with_tags} of {report.with_image} image records have tags "
        f"(mean {report.tags_per_record:.1f} per record); {prompt}"
    )
    tasks = ", ".join(f"{n} {task}" for task, n in sorted(report.by_task.items())) or "none"
    frames = ", ".join(f"{n} {frame}" for frame, n in sorted(report.by_box_frame.items())) or "none"
    lines.append(f"tasks     {tasks} (moa.tasks {report.moa_tasks}); box frames: {frames}")
    for error in report.malformed[:_EXAMPLES]:
        lines.append(f"  MALFORMED {error}")
    if len(report.malformed) > _EXAMPLES:
        lines.append(f"  ... and {len(report.malformed) - _EXAMPLES} more malformed records")
    if report.images_checked:
        lines.append(
            f"images    {report.unique_images} distinct files checked, {report.num_bad_images} missing or corrupt "
            f"(used by {report.samples_with_bad_images} samples)"
        )
        lines += [f"  BAD IMAGE {line}" for line in report.bad_images]
    else:
        lines.append("images    not checked")
    lines.append("tokens    (whole conversation incl. BOS and visual tokens, before fitting into max_length)")
    for name, summary in (("with image", report.lengths_image), ("text-only", report.lengths_text)):
        if summary and summary.count:
            quantiles = "  ".join(f"{k} {v}" for k, v in summary.percentiles.items())
            lines.append(f"  {name:<10} n={summary.count}  mean {summary.mean:.0f}  {quantiles}")
    lines.append(
        f"truncated {report.truncated} ({pct(report.truncated, usable)}) exceed max_length; "
        f"{report.rounds_dropped} lose whole trailing rounds"
    )
    lines.append("length settings (length_budget/truncation): rounds lost, samples shortened, left out")
    for name, summary in report.by_length_setting.items():
        chosen = "  <- this run" if name == f"{report.length_budget}/{report.truncation}" else ""
        lines.append(
            f"  {name:<16} {summary.rounds_lost} of {summary.rounds_total} rounds, "
            f"{summary.samples_shortened} shortened, {summary.samples_left_out} left out{chosen}"
        )
    n_empty = sum(report.nothing_supervised.values())
    if n_empty:
        reasons = ", ".join(f"{n} {reason}" for reason, n in report.nothing_supervised.items())
        lines.append(
            f"nothing supervised  {n_empty} ({pct(n_empty, usable)}): {reasons} -- left out of training"
        )
    else:
        lines.append("nothing supervised  none")
    lines += [f"  {line}" for line in report.nothing_supervised_examples]
    lines.append(
        "OK"
        if report.ok
        else "PROBLEMS FOUND: fix the malformed records / images (or train with on_bad_image=skip)"
    )
    return "\n".join(lines)


def paper_processor(tokenizer: str, mixer: str, image_size: int | None = None, tag_soft_prompt: bool = False):
    """The processor of a model with the paper's towers (the `CLIP_L14_336` [+ `DINOV2_L14`] presets) at
    `image_size` (default: CLIP's 336 px) under `mixer`, made without any checkpoint but the tokenizer:
    for data checks and benchmarks. Visual token count from `MofLlavaConfig`, image preprocessing as
    the model builder's; with `tag_soft_prompt`, the placeholder of LION's tag hint as the builder gives it."""
    from ..constants import TAG_HINT_TOKEN_INDEX
    from ..model import MofLlavaConfig, MofLlavaProcessor
    from ..model.builder import default_image_token_id
    from ..model.presets import CLIP_L14_336, DINOV2_L14
    from ..model.tokenizer import load_tokenizer

    image_size = image_size or CLIP_L14_336.architecture["image_size"]
    towers = [CLIP_L14_336.spec(image_size)]
    if mixer != "none":
        towers.append(DINOV2_L14.spec(image_size))
    tok = load_tokenizer(tokenizer)
    config = MofLlavaConfig(
        vision_towers=towers, mixer={"mode": mixer}, image_size=image_size, image_token_id=default_image_token_id(tok),
        tag_hint_token_id=TAG_HINT_TOKEN_INDEX if tag_soft_prompt else None,
    )
    return MofLlavaProcessor.for_config(config, tok)
