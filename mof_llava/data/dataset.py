"""`LlavaDataset`: LLaVA's training files as tokenised, labelled samples with preprocessed images.

Construction reads nothing but the cached record index and token statistics (both built on first
use, see record_file.py and lengths.py), so a worker's memory does not grow with the data file.
Samples with nothing to train on (the image does not fit in `max_length`, or no answer token does)
are left out here, once, and listed in `excluded`; `summary()` says how many and why. A sample is
read, tokenised and its image decoded only in `__getitem__`.

Each item is a dict `{"input_ids", "labels", "pixel_values", "record", "task"}` (`pixel_values`
[3, H, W], or None for a text-only sample; `record` says where the sample comes from: file:line,
record number, id; `task` the record's task, else `data.task`, else None), or a `SkippedSample` when
its image cannot be read and `on_bad_image="skip"`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..conversation import get_template
from .config import DataConfig
from .images import ImageLoadError, load_rgb_image
from .lengths import PROBLEMS, token_stats
from .record_file import RecordFile
from .records import RecordError
from .samples import TextEncoder, tokenize_record
from .skips import SkippedSample
from .tag_prompt import with_tag_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExcludedRecord:
    record: str  # where (file:line, record number)
    reason: str


class LlavaDataset(torch.utils.data.Dataset):
    """Map-style dataset over a LLaVA JSON / JSONL file; see the module docstring.

    `lengths` and `has_image` (one entry per dataset index) feed `build_train_sampler`.
    """

    def __init__(
        self,
        data_path: str | Path,
        processor: TextEncoder,
        *,
        image_folder: str | Path | None = None,
        cache_dir: str | Path | None = None,
        **settings,
    ):
        """`settings` are `DataConfig` fields (template, max_length, length_budget, truncation,
        image_aspect_ratio, on_bad_image, image_loading, num_proc, ...); what is not given takes
        `DataConfig`'s default, so the defaults live there only."""
        self.config = DataConfig(  # validates the settings
            data_path=str(data_path),
            image_folder=None if image_folder is None else str(image_folder),
            cache_dir=None if cache_dir is None else str(cache_dir),
            **settings,
        )
        self._load(processor)

    def _load(self, processor: TextEncoder) -> None:
        config = self.config
        self.processor = processor
        self.template = get_template(config.template)
        self.records = RecordFile(config.data_path, config.cache_dir)
        self._fitting = {"length_budget": config.length_budget, "truncation": config.truncation}
        stats, _ = token_stats(
            self.records, self.template, processor, config.max_length, config.cache_dir, config.num_proc,
            **self._fitting, tag_prompt=config.tag_prompt,
        )
        usable = stats["num_supervised"] > 0
        self.record_indices = np.flatnonzero(usable)
        self.lengths = np.asarray(stats["length"][self.record_indices], dtype=np.int64)
        self.has_image = np.asarray(self.records.has_image[self.record_indices], dtype=bool)
        kept = stats[self.record_indices]
        self.num_truncated = int(np.count_nonzero(kept["length"] < kept["full_length"]))
        self.excluded_indices = np.flatnonzero(~usable)  # record numbers left out
        self._problems = stats["problem"]
        if len(self.record_indices) == 0:
            raise ValueError(
                f"{config.data_path}: no record has anything to train on within max_length={config.max_length}"
            )
        self.image_folder = Path(config.image_folder) if config.image_folder is not None else None
        if self.image_folder is None and self.has_image.any():
            raise ValueError(f"{config.data_path} has records with images: pass image_folder")
        if len(self.excluded_indices):
            logger.warning(self.summary())

    @classmethod
    def from_config(cls, config: DataConfig, processor: TextEncoder) -> LlavaDataset:
        dataset = cls.__new__(cls)  # the config is made and checked already
        dataset.config = config
        dataset._load(processor)
        return dataset

    def __len__(self) -> int:
        return len(self.record_indices)

    def __getitem__(self, index: int) -> dict | SkippedSample:
        i = int(self.record_indices[index])
        record = self.records.record(i)
        location = self.records.location(i, record.id)
        if record.box_frame not in (None, self.config.image_aspect_ratio):
            raise RecordError(
                location,
                f"its boxes are in the {record.box_frame} frame but data.image_aspect_ratio is "
                f"{self.config.image_aspect_ratio}: convert it again with --frame {self.config.image_aspect_ratio}",
            )
        if self.config.tag_prompt is not None:  # the same prompt the length pass measured (tag_prompt.py)
            record = with_tag_prompt(record, self.config.tag_prompt, i, location)
        sample = tokenize_record(
            record, self.template, self.processor, self.config.max_length, location, **self._fitting
        )
        if sample.problem is not None:  # only if the processor differs from the one the index was built with
            return SkippedSample(index, str(location), sample.problem, kind="nothing_supervised")
        pixel_values = None
        if record.image is not None:
            path = self.image_folder / record.image
            try:
                image = load_rgb_image(path, self.config.image_loading)
            except ImageLoadError as err:
                if self.config.on_bad_image == "fail":
                    raise ImageLoadError(err.path, f"{err.reason} (image of {location})") from None
                return SkippedSample(index, str(location), f"image {err.path}: {err.reason}")
            pixel_values = self.processor.preprocess_images([image], self.config.image_aspect_ratio)[0]
        return {
            "input_ids": torch.from_numpy(sample.input_ids),
            "labels": torch.from_numpy(sample.labels),
            "pixel_values": pixel_values,
            "record": str(location),  # so a failing batch can name its samples
            "task": record.task if record.task is not None else self.config.task,  # LION's MoA (collator.py)
        }

    def excluded(self, limit: int | None = None) -> list[ExcludedRecord]:
        """The records left out with nothing to train on, and why."""
        chosen = self.excluded_indices[:limit]
        return [
            ExcludedRecord(str(self.records.location_with_id(int(i))), PROBLEMS[int(self._problems[i])])
            for i in chosen
        ]

    def summary(self) -> str:
        n_image = int(self.has_image.sum())
        lines = [
            f"{self.records.path}: {len(self.records)} records, {len(self)} used "
            f"({n_image} with an image, {len(self) - n_image} text-only), "
            f"{self.num_truncated} shortened to max_length={self.config.max_length}"
        ]
        n_excluded = len(self.excluded_indices)
        if n_excluded:
            lines.append(f"{n_excluded} left out with nothing to train on:")
            lines += [f"  {e.record}: {e.reason}" for e in self.excluded(limit=20)]
            if n_excluded > 20:
                lines.append(f"  ... and {n_excluded - 20} more")
        return "\n".join(lines)
