"""A record becomes token ids and labels: render with the template, encode with the processor, label
by character spans, fit into the length budget.

Labels come from *where* each token sits in the rendered text: a token is trained on when its
character span overlaps an assistant answer (with the space after `ASSISTANT:` and its closing
`</s>`, or the caption and its `\\n` for `plain`), as reported by `ConversationTemplate.render`. The
supervised tokens are LLaVA's (`preprocess_v1`, `preprocess_plain`), token for token. Image
placeholders never are. There is no count of tokens per turn that could drift from the tokenizer,
the cause of LLaVA's "tokenization mismatch" warning that silently masks whole samples.

Length budget (`max_length`, LLaVA's `model_max_length`): whole trailing rounds are dropped until the
sample fits; if even the first round does not fit, its tail is cut. A cut never goes through the
image placeholders (I-MoF puts 1152 of them in a 2048 budget): if the image does not fit, or nothing
of the first answer is left, the sample has nothing to train on and says why (`problem`); the dataset
leaves such samples out and reports them.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..constants import IGNORE_INDEX
from ..conversation import ConversationTemplate
from .records import Record, RecordError, RecordLocation

IMAGE_DOES_NOT_FIT = "the image does not fit in max_length"
NO_ANSWER_FITS = "no answer token fits in max_length"


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


def tokenize_record(
    record: Record,
    template: ConversationTemplate,
    processor: TextEncoder,
    max_length: int,
    location: RecordLocation | str = "<record>",
) -> TokenizedSample:
    """Token ids and labels of `record` rendered with `template`, fitted into `max_length` tokens."""
    turns = list(record.turns)
    if template.plain and (not record.has_image or len(turns) != 1):
        problem = "has no image" if not record.has_image else f"has {len(turns)} rounds"
        raise RecordError(
            location, f"the 'plain' template takes one image and one caption, but the record {problem}"
        )
    ids, labels, offsets = _encode(turns, template, processor)
    full_length, kept = len(ids), len(turns)
    if full_length > max_length and len(turns) > 1:
        kept, ids, labels = _drop_trailing_rounds(turns, template, processor, max_length, offsets)
    problem = None
    if len(ids) > max_length:
        ids, labels, problem = _cut_tail(ids, labels, max_length, processor.image_token_id)
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


def _drop_trailing_rounds(turns, template, processor, max_length, offsets):
    """Keep the most leading rounds that fit (at least one)."""
    # Estimate from the full encoding's offsets (the first k rounds render as a prefix of the text),
    # then confirm by encoding: the estimate is exact unless a token straddles a round boundary.
    prefix_ends = [len(template.render(turns[:k]).text) for k in range(1, len(turns))]
    tokens_of_prefix = np.searchsorted(offsets[:, 0], prefix_ends, side="left")
    kept = max(1, int(np.count_nonzero(tokens_of_prefix <= max_length)))
    while True:
        ids, labels, _ = _encode(turns[:kept], template, processor)
        if len(ids) <= max_length or kept == 1:
            return kept, ids, labels
        kept -= 1


def _cut_tail(ids: np.ndarray, labels: np.ndarray, max_length: int, image_token_id: int):
    if np.any(ids[max_length:] == image_token_id):
        return ids[:max_length], labels[:max_length], IMAGE_DOES_NOT_FIT
    return ids[:max_length], labels[:max_length], None
