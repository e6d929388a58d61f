"""Preference pairs from BPO's scored records or from a flat JSONL, validated, and converters between them.

BPO's native record (its `data_generation/README.md`)::

    {"prompt": "<image>\\n...", "image": "rel/path.jpg",
     "completions": [{"score": 1, "response": "...", "type": "gt"},
                     {"score": 0, "response": "...", "type": "llm-hal"}, ...]}

gives one pair for every two completions with different scores, the higher-scored one chosen (so a
gt record with two negatives gives two pairs). Like BPO, a record with any response over 350 words
is dropped; unlike BPO, the dropped records are counted and located in the result.

The flat record is one pair: `{id, image, prompt, chosen, rejected, neg_type, source}`.

Both are read with the data pipeline's scanner (JSON array or JSONL, line numbers kept), and every
problem is one line naming file, line, record and what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..constants import IMAGE_TOKEN
from .record_file import scan_file
from .records import RecordError, RecordLocation

# BPO drops a record if any of its responses is longer than this many (whitespace-separated) words.
MAX_WORDS = 350
FLAT_KEYS = ("id", "image", "prompt", "chosen", "rejected", "neg_type", "source")
# The flat format does not say what the chosen response was; converted back it is BPO's ground truth.
CHOSEN_TYPE = "gt"
_MAX_ERRORS_SHOWN = 20


class PreferenceDataError(ValueError):
    """Some records of a preference file are invalid: the first ones, one line each, and the count."""

    def __init__(self, path: Path, errors: list[RecordError]):
        self.path, self.errors = path, errors
        shown = "\n".join(f"  {e}" for e in errors[:_MAX_ERRORS_SHOWN])
        more = (
            f"\n  ... and {len(errors) - _MAX_ERRORS_SHOWN} more" if len(errors) > _MAX_ERRORS_SHOWN else ""
        )
        super().__init__(f"{path}: {len(errors)} invalid preference record(s):\n{shown}{more}")


@dataclass(frozen=True)
class PreferencePair:
    id: str
    image: str
    prompt: str  # holds exactly one <image>
    chosen: str
    rejected: str
    neg_type: str  # how the rejected response was made: BPO's llm-hal / mllm-hal, or ours
    source: str  # the data set the record comes from

    def to_flat(self) -> dict[str, str]:
        return asdict(self)

    def content(self) -> tuple[str, ...]:
        """Everything but the id (ids are renumbered by conversions)."""
        return (self.image, self.prompt, self.chosen, self.rejected, self.neg_type, self.source)


@dataclass
class PairingResult:
    pairs: list[PreferencePair] = field(default_factory=list)
    too_long: list[RecordLocation] = field(default_factory=list)  # dropped: a response over max_words
    without_pair: list[RecordLocation] = field(default_factory=list)  # all completions scored alike
    max_words: int = MAX_WORDS

    def summary(self) -> str:
        return (
            f"{len(self.pairs)} pair(s); {len(self.too_long)} record(s) dropped for a response over "
            f"{self.max_words} words; {len(self.without_pair)} record(s) whose completions all share one score"
        )


def read_pairs(
    path: str | Path, image_root: str | Path | None = None, max_words: int = MAX_WORDS
) -> PairingResult:
    """All pairs of a native or flat file (told apart per record by its `completions` key).

    Raises `PreferenceDataError` listing every invalid record; `image_root` also checks the images exist.
    """
    path = Path(path)
    result, errors, first_use = PairingResult(max_words=max_words), [], {}
    for index, (_, _, line, raw) in enumerate(scan_file(path)):
        location = RecordLocation(str(path), index, line, _raw_id(raw))
        before = len(result.pairs)
        try:
            if isinstance(raw, json.JSONDecodeError):
                raise RecordError(location, f"not valid JSON ({raw.msg}, column {raw.colno})")
            _add_record(raw, location, path, image_root, max_words, result)
            for pair in result.pairs[before:]:  # an id names one pair
                if first_use.setdefault(pair.id, location) is not location:
                    raise RecordError(
                        location, f"pair id {pair.id!r} is already used at line {first_use[pair.id].line}"
                    )
        except RecordError as err:
            errors.append(err)
    if errors:
        raise PreferenceDataError(path, errors)
    if not result.pairs:
        raise PreferenceDataError(
            path, [RecordError(str(path), f"the file gives no pairs ({result.summary()})")]
        )
    return result


def _add_record(
    raw: Any, location: RecordLocation, path: Path, image_root, max_words: int, result: PairingResult
) -> None:
    if not isinstance(raw, dict):
        raise RecordError(location, f"a record must be a JSON object, got {type(raw).__name__}")
    native = "completions" in raw
    texts = _native_responses(raw, location) if native else _flat_responses(raw, location)
    prompt, image = _prompt(raw, location), _image(raw, location, image_root)
    if max(len(text.split()) for text in texts) > max_words:
        result.too_long.append(location)
        return
    if not native:
        result.pairs.append(_flat_pair(raw, location, prompt, image))
        return
    pairs = list(_native_pairs(raw, location, path, prompt, image))
    result.pairs.extend(pairs)
    if not pairs:
        result.without_pair.append(location)


def _native_responses(raw: dict, location: RecordLocation) -> list[str]:
    completions = raw["completions"]
    if not isinstance(completions, list) or len(completions) < 2:
        raise RecordError(
            location, "'completions' must be a list of at least two {score, response, type} objects"
        )
    texts = []
    for k, completion in enumerate(completions):
        where = f"completion {k}"
        if not isinstance(completion, dict):
            raise RecordError(location, f"{where} must be a JSON object, got {type(completion).__name__}")
        score = completion.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise RecordError(location, f"{where}: 'score' must be a finite number, got {score!r}")
        _text(completion, "type", location, where)
        texts.append(_text(completion, "response", location, where))
    return texts


def _native_pairs(
    raw: dict, location: RecordLocation, path: Path, prompt: str, image: str
) -> Iterator[PreferencePair]:
    record_id = location.record_id if location.record_id is not None else f"{path.stem}:{location.index}"
    source = str(raw.get("source", path.stem))
    completions = raw["completions"]
    n = 0
    for i, first in enumerate(completions):
        for second in completions[i + 1 :]:
            if first["score"] == second["score"]:
                continue
            chosen, rejected = (first, second) if first["score"] > second["score"] else (second, first)
            yield PreferencePair(
                f"{record_id}#{n}",
                image,
                prompt,
                chosen["response"],
                rejected["response"],
                rejected["type"],
                source,
            )
            n += 1


def _flat_responses(raw: dict, location: RecordLocation) -> list[str]:
    missing = [key for key in FLAT_KEYS if key not in raw]
    if missing:
        raise RecordError(
            location, f"a flat preference record needs the key(s) {', '.join(missing)} (or 'completions')"
        )
    texts = [_text(raw, key, location) for key in ("chosen", "rejected")]
    if texts[0].strip() == texts[1].strip():
        raise RecordError(location, "'chosen' and 'rejected' are the same text")
    return texts


def _flat_pair(raw: dict, location: RecordLocation, prompt: str, image: str) -> PreferencePair:
    neg_type, source = _text(raw, "neg_type", location), _text(raw, "source", location)
    return PreferencePair(str(raw["id"]), image, prompt, raw["chosen"], raw["rejected"], neg_type, source)


def _raw_id(raw: Any) -> str | None:
    value = raw.get("id") if isinstance(raw, dict) else None
    return None if value is None else str(value)


def _text(raw: dict, key: str, location: RecordLocation, where: str = "") -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        what = f"{where}: " if where else ""
        raise RecordError(location, f"{what}{key!r} must be a non-empty string, got {value!r}")
    return value


def _prompt(raw: dict, location: RecordLocation) -> str:
    prompt = _text(raw, "prompt", location)
    count = prompt.count(IMAGE_TOKEN)
    if count != 1:
        # BPO's own converter prepends <image> to prompts that may already hold one.
        raise RecordError(location, f"'prompt' must hold exactly one {IMAGE_TOKEN}, it holds {count}")
    return prompt


def _image(raw: dict, location: RecordLocation, image_root: str | Path | None) -> str:
    image = _text(raw, "image", location)
    if image_root is not None and not (Path(image_root) / image).is_file():
        raise RecordError(location, f"image {image!r} not found under {image_root}")
    return image


def native_from_pairs(pairs: Iterable[PreferencePair]) -> list[dict[str, Any]]:
    """BPO records from pairs: one per (image, prompt, chosen, source), the chosen response scored 1 as
    `gt`, each rejected one 0 with its neg_type. Pairing them again gives the same pairs."""
    records: dict[tuple[str, ...], dict[str, Any]] = {}
    for pair in pairs:
        key = (pair.image, pair.prompt, pair.chosen, pair.source)
        if key not in records:
            chosen = {"score": 1, "response": pair.chosen, "type": CHOSEN_TYPE}
            records[key] = {"id": pair.id, "image": pair.image, "prompt": pair.prompt, "source": pair.source,
                            "completions": [chosen]}  # fmt: skip
        records[key]["completions"].append({"score": 0, "response": pair.rejected, "type": pair.neg_type})
    return list(records.values())


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """One JSON object a line, written atomically."""
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_flat(path: str | Path, pairs: Iterable[PreferencePair]) -> Path:
    return write_jsonl(path, (pair.to_flat() for pair in pairs))


def write_native(path: str | Path, pairs: Iterable[PreferencePair]) -> Path:
    return write_jsonl(path, native_from_pairs(pairs))
