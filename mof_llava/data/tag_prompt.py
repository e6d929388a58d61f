"""LION's tag soft prompt: a record's image tags become a prefix of its first question.

    According to <tag_hint>, you are allowed to use or partially use the following tags: [dog, grass]. What is ...

The string is LION's (`lion_t5.py`, JiuTian-VL/JiuTian-LION), with its `<extra_id_0>` written as our
`<tag_hint>` marker: the processor turns the marker into the placeholder id `TAG_HINT_TOKEN_INDEX`
and the model puts one learnable vector there (model/tag_prompt.py), as it puts visual tokens at
the image placeholders. Tags are joined with ", " as LION joins RAM's.

Tags are noisy, so training may drop and shuffle them (`TagPromptConfig`). The draw depends only on
the seed and the record's number in its file, so every epoch, the length pass and every data-loader
worker see the same prompt for a record, and the sampler's lengths stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

import numpy as np
from pydantic import Field

from ..constants import IMAGE_TOKEN, TAG_HINT_TOKEN
from ..typed_config import STRICT_KEYS, check
from .records import Record, RecordError, RecordLocation

# LION's prefix, verbatim but for the hint marker (lion_t5.py:131).
LION_TAG_TEMPLATE = (
    "According to {hint}, you are allowed to use or partially use the following tags: [{tags}]. "
)
TAG_SEPARATOR = ", "


def tag_prompt(tags: list[str] | tuple[str, ...]) -> str:
    """LION's prefix for `tags`, the hint marker where the learnable vector goes."""
    return LION_TAG_TEMPLATE.format(hint=TAG_HINT_TOKEN, tags=TAG_SEPARATOR.join(tags))


@dataclass(frozen=True)
class TagPromptConfig:
    """
    dropout: probability that each tag is left out of a record's prompt (0: all tags kept).
    shuffle: present the kept tags in a random order instead of the file's.
    seed: seeds the draw; with the record's number it alone decides the prompt (same every epoch).
    """

    __pydantic_config__ = STRICT_KEYS

    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    shuffle: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        check(self, "data.tag_prompt.")

    def draw(self, tags: tuple[str, ...], record_number: int) -> tuple[str, ...]:
        """The tags record `record_number`'s prompt shows: kept with probability 1 - dropout, then
        shuffled if asked; a function of (seed, record_number) only."""
        if not tags or (self.dropout == 0 and not self.shuffle):
            return tags
        rng = np.random.default_rng([self.seed, record_number])
        kept = [t for t, u in zip(tags, rng.random(len(tags))) if u >= self.dropout]
        if self.shuffle:
            kept = [kept[i] for i in rng.permutation(len(kept))]
        return tuple(kept)


def with_tag_prompt(
    record: Record, config: TagPromptConfig, record_number: int, location: RecordLocation | str
) -> Record:
    """`record` with LION's tag prefix after the `<image>` line of its first question. Text-only
    records are unchanged; a record with an image but no `tags` is an error (run `mof-llava tags`)."""
    if not record.has_image:
        return record
    if record.tags is None:
        raise RecordError(
            location,
            "the tag prompt is on (data.tag_prompt) but the record has no 'tags'; add them with `mof-llava tags`",
        )
    human, gpt = record.turns[0]
    rest = human[len(IMAGE_TOKEN) :].lstrip("\n") if human.startswith(IMAGE_TOKEN) else human
    prompted = f"{IMAGE_TOKEN}\n{tag_prompt(config.draw(record.tags, record_number))}{rest}"
    return replace(record, turns=((prompted, gpt), *record.turns[1:]))
