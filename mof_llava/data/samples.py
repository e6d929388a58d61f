"""A record becomes token ids and labels: render with the template, encode with the processor, label
by character spans, fit into the length budget.

Labels come from *where* each token sits in the rendered text: a token is trained on when its
character span overlaps an assistant answer (with the space after `ASSISTANT:` and its closing
`</s>`, or the caption and its `\\n` for `plain`), as reported by `ConversationTemplate.render`. The
supervised tokens are LLaVA's (`preprocess_v1`, `preprocess_plain`), token for token. Image
placeholders never are. There is no count of tokens per turn that could drift from the tokenizer,
the cause of LLaVA's "tokenization mismatch" warning that silently masks whole samples.

Length budget (`max_length`, LLaVA's `model_max_length`), two settings:

- `length_budget`, what `max_length` counts: `expanded` (default) every token the LLM reads, the
  image placeholders included (I-MoF puts 1152 of them in a 2048 budget; LLaVA-1.5 cuts after
  merging the image features); `text` the text tokens and one per image, as the tokenizer saw the
  prompt (the MMVP fork cuts only there, so its sequences run up to 1151 past `max_length`).
- `truncation`, how a sample over budget is shortened: `rounds` (default) drops whole trailing rounds
  until it fits and cuts the tail of the first round only if that alone does not fit; `tokens` cuts
  at the budget wherever that falls, as both references do.

A cut never goes through the image placeholders: if the image does not fit, or nothing of the first
answer is left, the sample has nothing to train on and says why (`problem`); the dataset leaves such
samples out and reports them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from ..constants import IGNORE_INDEX
from ..conversation import ConversationTemplate
from .records import Record, RecordError, RecordLocation

IMAGE_DOES_NOT_FIT = "the image does not fit in max_length"
NO_ANSWER_FITS = "no answer token fits in max_length"

LengthBudget = Literal["expanded", "text"]
Truncation = Literal["rounds", "tokens"]
LENGTH_BUDGETS: tuple[str, ...] = ("expanded", "text")
TRUNCATIONS: tuple[str, ...] = ("rounds", "tokens")


class TextEncoder(Protocol):
    """What the data pipeline needs from `MofLlavaProcessor`."""

    image_token_id: int
    num_image_tokens: int

    def encode(self, text: str, add_bos: bool = True): ...  # -> object with .ids and .offsets


@dataclass(frozen=True)
class TokenizedSample:
    input_ids: np.ndarray  # int64 [length]
    labels: np.ndarray  # int64 [length], IGNORE_INDEX where not trained on
    full_length: int  # tokens of the whole conversation before fitting it into max_length
    rounds_kept: int
    rounds_total: int
    problem: str | None = None  # why nothing is supervised (then labels are all IGNORE_INDEX)

    @property
    def num_supervised(self) -> int:
        return int(np.count_nonzero(self.labels != IGNORE_INDEX))

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids) or self.rounds_kept < self.rounds_total


@dataclass(frozen=True)
class Budget:
    """`max_length` and what it counts (see the module docstring)."""

    max_length: int
    length_budget: LengthBudget
    image_token_id: int
    num_image_tokens: int

    def uncounted(self, ids: np.ndarray) -> int:
        """Tokens of `ids` that the budget does not count: with `text`, all placeholders of an image but one."""
        if self.length_budget == "expanded":
            return 0
        images = int(np.count_nonzero(ids == self.image_token_id)) // self.num_image_tokens
        return images * (self.num_image_tokens - 1)

    def fits(self, ids: np.ndarray) -> bool:
        return len(ids) - self.uncounted(ids) <= self.max_length

    def end(self, ids: np.ndarray) -> int:
        """How many leading tokens of `ids` fit."""
        if self.length_budget == "expanded":
            return min(len(ids), self.max_length)
        image = ids == self.image_token_id
        counted = np.cumsum(
            ~(image & np.concatenate([[False], image[:-1]]))
        )  # an image's first placeholder counts
        return int(np.searchsorted(counted, self.max_length, side="right"))


def check_length_settings(length_budget: str, truncation: str, where: str = "") -> None:
    if length_budget not in LENGTH_BUDGETS:
        raise ValueError(f"{where}length_budget must be one of {LENGTH_BUDGETS}, got {length_budget!r}")
    if truncation not in TRUNCATIONS:
        raise ValueError(f"{where}truncation must be one of {TRUNCATIONS}, got {truncation!r}")


def tokenize_record(
    record: Record,
    template: ConversationTemplate,
    processor: TextEncoder,
    max_length: int,
    location: RecordLocation | str = "<record>",
    *,
    length_budget: LengthBudget = "expanded",
    truncation: Truncation = "rounds",
) -> TokenizedSample:
    """Token ids and labels of `record` rendered with `template`, fitted into `max_length` tokens as
    `length_budget` counts them, shortened the `truncation` way (see the module docstring)."""
    check_length_settings(length_budget, truncation)
    turns = list(record.turns)
    if template.plain and (not record.has_image or len(turns) != 1):
        problem = "has no image" if not record.has_image else f"has {len(turns)} rounds"
        raise RecordError(
            location, f"the 'plain' template takes one image and one caption, but the record {problem}"
        )
    budget = Budget(max_length, length_budget, processor.image_token_id, processor.num_image_tokens)
    ids, labels, offsets = _encode(turns, template, processor)
    full_length, kept = len(ids), len(turns)
    if truncation == "tokens":
        kept = _rounds_within(turns, template, offsets, budget.end(ids))
    elif not budget.fits(ids) and len(turns) > 1:
        kept, ids, labels = _drop_trailing_rounds(turns, template, processor, budget, ids, offsets)
    ids, labels, problem = _cut(ids, labels, budget.end(ids), processor.image_token_id)
    if problem is None and not np.any(labels != IGNORE_INDEX):
        problem = NO_ANSWER_FITS
    if problem is not None:
        labels = np.full_like(ids, IGNORE_INDEX)
    return TokenizedSample(ids, labels, full_length, kept, len(turns), problem)


def supervised_mask(offsets: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """True for tokens whose character span overlaps a supervised span. A zero-width token (e.g. a
    word-boundary piece the tokenizer inserts) counts at its position."""
    starts, ends = offsets[:, 0], np.maximum(offsets[:, 1], offsets[:, 0] + 1)
    mask = np.zeros(len(offsets), dtype=bool)
    for span_start, span_end in spans:
        mask |= (starts < span_end) & (ends > span_start)
    return mask


def _encode(turns, template: ConversationTemplate, processor: TextEncoder):
    """(ids, labels, offsets) of the rendered turns."""
    rendered = template.render(turns)
    encoded = processor.encode(rendered.text, add_bos=True)
    ids = np.asarray(encoded.ids, dtype=np.int64)
    flat = itertools.chain.from_iterable(encoded.offsets)  # 2x faster than np.asarray on tuples
    offsets = np.fromiter(flat, dtype=np.int64, count=2 * len(encoded.offsets)).reshape(-1, 2)
    mask = supervised_mask(offsets, rendered.supervised_spans) & (ids != processor.image_token_id)
    return ids, np.where(mask, ids, IGNORE_INDEX), offsets


def _round_ends(turns, template, offsets) -> np.ndarray:
    """Token count of the first k rounds, for k = 1 .. len(turns), from the full encoding's offsets (the
    first k rounds render as a prefix of the text): exact unless a token straddles a round boundary,
    which `</s>`, a special token, never does."""
    prefix_ends = [len(template.render(turns[:k]).text) for k in range(1, len(turns))]
    return np.append(np.searchsorted(offsets[:, 0], prefix_ends, side="left"), len(offsets))


def _rounds_within(turns, template, offsets, end: int) -> int:
    """Rounds whose every token is among the first `end`."""
    return int(np.count_nonzero(_round_ends(turns, template, offsets) <= end))


def _drop_trailing_rounds(turns, template, processor, budget: Budget, full_ids, offsets):
    """Keep the most leading rounds that fit (at least one)."""
    # Estimate from the full encoding, then confirm by encoding. The image is in the first round, so
    # every prefix leaves as many placeholders uncounted as the whole conversation.
    counted = _round_ends(turns, template, offsets)[:-1] - budget.uncounted(full_ids)
    kept = max(1, int(np.count_nonzero(counted <= budget.max_length)))
    while True:
        ids, labels, _ = _encode(turns[:kept], template, processor)
        if budget.fits(ids) or kept == 1:
            return kept, ids, labels
        kept -= 1


def _cut(ids: np.ndarray, labels: np.ndarray, end: int, image_token_id: int):
    if end >= len(ids):
        return ids, labels, None
    problem = IMAGE_DOES_NOT_FIT if np.any(ids[end:] == image_token_id) else None
    return ids[:end], labels[:end], problem
