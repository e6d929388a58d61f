"""`LlavaCollator`: dataset items -> a right-padded training batch.

    input_ids       long [B, L]  right-padded with `pad_token_id`: training passes the processor's
                                 (`MofLlavaProcessor.pad_token_id`: the tokenizer's pad id, its unk
                                 id when it has none, as LLaVA-1.5 does for Vicuna)
    labels          long [B, L]  IGNORE_INDEX on padding (and wherever the dataset put it)
    attention_mask  long [B, L]  1 on real tokens
    pixel_values    [n_images, 3, H, W], the images of the rows that have one, in row order;
                    absent when no row has an image
    skipped         list[SkippedSample]: items the dataset could not produce (always present; the
                    training loop must pop it before calling the model, and count it)
    sample_records  list[str | None]: where each row's record is (file:line, number, id), for
                    error messages (always present; pop it before calling the model too)
    task_ids        long [B], only with `tasks` (the model's `moa.tasks`): each row's task (its record's
                    `task`, else `data.task`) as an index into `tasks`, for LION's mixture of adapters

Skipped items are left out, never replaced; if every item of a batch was skipped the batch has zero
rows (`input_ids` of shape [0, 0]) and the training loop must not run the model on it as-is.

`PackedCollator` (data.packing, see packing.py) lays the samples back to back in one row instead:

    input_ids       long [1, T]  T = the samples' lengths summed; no padding, no attention_mask
    labels          long [1, T]  each sample's labels, its first one IGNORE_INDEX: the causal loss
                                 predicts label t from token t-1, which at a boundary is the previous
                                 sample's last token (unpacked, that first label is never predicted)
    position_ids    long [1, T]  0, 1, ... restarting at every sample: transformers derives the
                                 per-sample attention blocks from the restarts (sdpa and eager build a
                                 block-diagonal mask, flash attention runs variable-length), but only
                                 without a KV cache, hence
    use_cache       False
    task_ids        long [1, T]  with `tasks`: each token's sample's task
    pixel_values, skipped, sample_records as above.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..constants import IGNORE_INDEX
from .records import RecordError
from .skips import SkippedSample


@dataclass(frozen=True)
class LlavaCollator:
    pad_token_id: int
    tasks: tuple[str, ...] | None = None  # the model's moa.tasks: add task_ids

    def __call__(self, items: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
        skipped, rows = _split(items)
        length = max((len(row["input_ids"]) for row in rows), default=0)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for r, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[r, :n] = torch.as_tensor(row["input_ids"])
            labels[r, :n] = torch.as_tensor(row["labels"])
            attention_mask[r, :n] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if self.tasks is not None:
            batch["task_ids"] = task_ids(rows, self.tasks)
        return _add_images_and_records(batch, rows, skipped)


@dataclass(frozen=True)
class PackedCollator:
    pad_token_id: int  # for the zero-row batch only, so both collators hand the trainer the same
    tasks: tuple[str, ...] | None = None

    def __call__(self, items: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
        skipped, rows = _split(items)
        if not rows:
            return LlavaCollator(self.pad_token_id, self.tasks)(items)
        labels = []
        for row in rows:
            sample_labels = torch.as_tensor(row["labels"]).clone()
            sample_labels[0] = IGNORE_INDEX  # never predicted from the previous sample's last token
            labels.append(sample_labels)
        batch: dict[str, Any] = {
            "input_ids": torch.cat([torch.as_tensor(row["input_ids"]) for row in rows])[None].long(),
            "labels": torch.cat(labels)[None].long(),
            "position_ids": torch.cat([torch.arange(len(row["input_ids"])) for row in rows])[None],
            "use_cache": False,
        }
        if self.tasks is not None:  # one per token: the rows' samples may be of different tasks
            lengths = torch.tensor([len(row["input_ids"]) for row in rows])
            batch["task_ids"] = task_ids(rows, self.tasks).repeat_interleave(lengths)[None]
        return _add_images_and_records(batch, rows, skipped)


def task_ids(rows: Sequence[dict[str, Any]], tasks: tuple[str, ...]) -> torch.Tensor:
    """Each row's task as an index into `tasks`; a row without one, or with another, is refused naming its record."""
    ids = []
    for row in rows:
        task = row.get("task")
        if task is None:
            raise RecordError(row.get("record") or "<sample>", f"has no 'task' and data.task is unset; the model's "
                              f"mixture of adapters routes each sample by its task (moa.tasks {list(tasks)})")
        if task not in tasks:
            raise RecordError(row.get("record") or "<sample>", f"task {task!r} is not one of the model's moa.tasks {list(tasks)}")
        ids.append(tasks.index(task))
    return torch.tensor(ids, dtype=torch.long)


def _split(items) -> tuple[list[SkippedSample], list[dict[str, Any]]]:
    skipped = [item for item in items if isinstance(item, SkippedSample)]
    return skipped, [item for item in items if not isinstance(item, SkippedSample)]


def _add_images_and_records(batch: dict[str, Any], rows: list[dict[str, Any]], skipped) -> dict[str, Any]:
    images = [row["pixel_values"] for row in rows if row.get("pixel_values") is not None]
    if images:
        batch["pixel_values"] = torch.stack(images)
    batch["skipped"] = skipped
    batch["sample_records"] = [row.get("record") for row in rows]
    return batch
