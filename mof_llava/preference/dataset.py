"""`PreferenceDataset`: preference pairs as two tokenised, labelled conversations over one image.

Each pair (records.py: BPO's native records or the flat JSONL, validated) becomes the one-round
conversations `(prompt, chosen)` and `(prompt, rejected)`, rendered with the run's template and
labelled by the data pipeline (data/samples.py): the prompt, every visual placeholder and padding
are IGNORE, the response is supervised; a sample over `max_length` is shortened the pipeline's
placeholder-safe way. A pair of which either half has nothing left to train on (its image or every
response token falls past `max_length`) is left out, listed in `excluded` and counted in `summary()`.

The pairs are read into memory once (text only: BPO's 167K pairs are ~100 MB) and tokenised once at
construction, for the grouped sampler's lengths; an image is decoded only in `__getitem__`.

An item is `{"chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels",
"pixel_values" [3, H, W], "record"}` (and "reference_logps" [2], chosen and rejected, once the run
has set `reference_logps` for reference precomputed), or a `SkippedSample` when its image cannot be
read and `on_bad_image="skip"`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..conversation import get_template
from ..data.config import DataConfig
from ..data.images import ImageLoadError, load_rgb_image
from ..data.preference_records import PreferencePair, read_pairs
from ..data.records import RecordLocation, parse_record
from ..data.samples import TextEncoder, TokenizedSample, tokenize_record
from ..data.skips import SkippedSample

logger = logging.getLogger(__name__)
HALVES = ("chosen", "rejected")


@dataclass(frozen=True)
class PairFile:
    """The file the pairs come from and an index of them (every pair's content hashed, in order): what
    a run's data fingerprint records, so a resume refuses a changed file."""

    path: Path
    index: np.ndarray  # uint8 [pairs, 32]


@dataclass(frozen=True)
class ExcludedPair:
    record: str
    reason: str


class PreferenceDataset(torch.utils.data.Dataset):
    """Map-style dataset over a preference file; `lengths` (the longer half of each pair, as both
    halves are padded to one length) and `has_image` feed `build_train_sampler`."""

    def __init__(self, config: DataConfig, processor: TextEncoder):
        self.config, self.processor = config, processor
        self.template = get_template(config.template)
        result = read_pairs(config.data_path, image_root=config.image_folder)
        self.pairing = result.summary()
        self.records = PairFile(Path(config.data_path), _content_index(result.pairs))
        self.pairs: list[PreferencePair] = []
        self.numbers: list[int] = []  # each used pair's position among the file's pairs
        self.excluded: list[ExcludedPair] = []
        lengths = []
        for number, pair in enumerate(result.pairs):
            samples = self._tokenize(pair, number)
            problem = next((s.problem for s in samples if s.problem is not None), None)
            if problem is not None:
                self.excluded.append(ExcludedPair(self._where(pair, number), problem))
                continue
            self.pairs.append(pair)
            self.numbers.append(number)
            lengths.append(max(len(s.input_ids) for s in samples))
        if not self.pairs:
            raise ValueError(
                f"{config.data_path}: no pair has anything to train on within max_length={config.max_length}"
            )
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.has_image = np.ones(len(self.pairs), dtype=bool)  # every pair has one (records.py checks)
        self.reference_logps: torch.Tensor | None = None  # [pairs, 2] for reference precomputed
        if self.excluded:
            logger.warning(self.summary())

    @classmethod
    def from_config(cls, config: DataConfig, processor: TextEncoder) -> PreferenceDataset:
        return cls(config, processor)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict | SkippedSample:
        pair, number = self.pairs[index], self.numbers[index]
        where = self._where(pair, number)
        chosen, rejected = self._tokenize(pair, number)
        path = Path(self.config.image_folder or ".") / pair.image
        try:
            image = load_rgb_image(path, self.config.image_loading)
        except ImageLoadError as err:
            if self.config.on_bad_image == "fail":
                raise ImageLoadError(err.path, f"{err.reason} (image of {where})") from None
            return SkippedSample(index, where, f"image {err.path}: {err.reason}")
        item = {
            "chosen_input_ids": torch.from_numpy(chosen.input_ids),
            "chosen_labels": torch.from_numpy(chosen.labels),
            "rejected_input_ids": torch.from_numpy(rejected.input_ids),
            "rejected_labels": torch.from_numpy(rejected.labels),
            "pixel_values": self.processor.preprocess_images([image], self.config.image_aspect_ratio)[0],
            "record": where,
        }
        if self.reference_logps is not None:
            item["reference_logps"] = self.reference_logps[index]
        return item

    def _tokenize(self, pair: PreferencePair, number: int) -> tuple[TokenizedSample, TokenizedSample]:
        location = RecordLocation(str(self.config.data_path), number, 0, pair.id)
        settings = {"length_budget": self.config.length_budget, "truncation": self.config.truncation}
        samples = []
        for half in HALVES:
            raw = {
                "id": pair.id,
                "image": pair.image,
                "conversations": [
                    {"from": "human", "value": pair.prompt},
                    {"from": "gpt", "value": getattr(pair, half)},
                ],
            }
            record = parse_record(raw, location)  # LLaVA's <image> normalisation, as stage 2 has it
            samples.append(
                tokenize_record(
                    record, self.template, self.processor, self.config.max_length, location, **settings
                )
            )
        return samples[0], samples[1]

    def _where(self, pair: PreferencePair, number: int) -> str:
        return f"{self.config.data_path} (pair {number}, id {pair.id!r})"

    def summary(self) -> str:
        lines = [f"{self.config.data_path}: {self.pairing}; {len(self)} pair(s) used"]
        if self.excluded:
            lines.append(f"{len(self.excluded)} pair(s) left out with nothing to train on:")
            lines += [f"  {e.record}: {e.reason}" for e in self.excluded[:20]]
            if len(self.excluded) > 20:
                lines.append(f"  ... and {len(self.excluded) - 20} more")
        return "\n".join(lines)


def _content_index(pairs: list[PreferencePair]) -> np.ndarray:
    digests = [hashlib.sha256("\x00".join((p.id, *p.content())).encode()).digest() for p in pairs]
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(pairs), 32)
