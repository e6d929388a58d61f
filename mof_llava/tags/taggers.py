"""Image taggers: where the `tags` of LION's tag prompt come from, behind one interface.

    tagger.tag([ImageRef("coco/1.jpg", Path("/data/coco/1.jpg")), ...]) -> [["dog", "grass"], ...]

- `PrecomputedTagger` (the default, fully offline): a file made elsewhere, e.g. by RAM, mapping
  each image (its path as the records write it) to its tags.
- `CLIPZeroShotTagger`: a full CLIP checkpoint (text and vision towers) scores every word of a fixed
  vocabulary against the image and keeps the best; an approximate offline stand-in for RAM.
- `NullTagger`: no tags (the prompt then reads "tags: []"), for ablations.

LION's own tagger, RAM (`ram_swin_large_14m`, 384 px, per-class thresholds), is not on PyPI; it plugs
in as any object with this `tag` method passed to `tag(job, tagger=...)` (docs/lion.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..data.tags_file import TaggerError, read_tags_file, read_vocabulary

__all__ = [
    "ImageRef", "ImageTagger", "NullTagger", "PrecomputedTagger", "TaggerError", "read_tags_file", "read_vocabulary",
]  # fmt: skip


@dataclass(frozen=True)
class ImageRef:
    key: str  # the record's `image`, as written in the data file
    path: Path  # the file, resolved against the image folder


class ImageTagger(Protocol):
    def tag(self, images: Sequence[ImageRef]) -> list[list[str]]: ...


class NullTagger:
    def tag(self, images: Sequence[ImageRef]) -> list[list[str]]:
        return [[] for _ in images]


class PrecomputedTagger:
    """Tags from a JSON object `{image: [tags]}` or JSONL lines `{"image": ..., "tags": [...]}`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.tags = read_tags_file(self.path)

    def tag(self, images: Sequence[ImageRef]) -> list[list[str]]:
        missing = [ref.key for ref in images if ref.key not in self.tags]
        if missing:
            raise TaggerError(
                f"{self.path}: no tags for image {missing[0]!r} ({len(missing)} of this batch missing)"
            )
        return [list(self.tags[ref.key]) for ref in images]
