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

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class TaggerError(ValueError):
    """Bad tagger input (a tags file, a vocabulary, an image without tags); one line naming it."""


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


def read_tags_file(path: Path) -> dict[str, list[str]]:
    """`.jsonl`: one `{"image", "tags"}` object a line; otherwise one JSON object `{image: [tags]}`."""
    if not path.is_file():
        raise TaggerError(f"{path}: no such tags file")
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        mapping = _json(text, path, 0)
        if not isinstance(mapping, dict):
            raise TaggerError(f"{path}: expected one JSON object {{image: [tags]}} (or a .jsonl file)")
        return {key: _checked(tags, f"{path}: image {key!r}") for key, tags in mapping.items()}
    out: dict[str, list[str]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = _json(line, path, lineno)
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise TaggerError(f'{path}:{lineno}: a line must be an object {{"image": ..., "tags": [...]}}')
        if row["image"] in out:
            raise TaggerError(f"{path}:{lineno}: image {row['image']!r} is listed twice")
        out[row["image"]] = _checked(row.get("tags"), f"{path}:{lineno}")
    return out


def _json(text: str, path: Path, lineno: int) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise TaggerError(f"{path}:{lineno or err.lineno}: not valid JSON ({err.msg})") from None


def _checked(tags: object, where: str) -> list[str]:
    if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
        raise TaggerError(f"{where}: 'tags' must be a list of non-empty strings, got {tags!r}")
    return [t.strip() for t in tags]


def read_vocabulary(path: str | Path) -> list[str]:
    """One tag per line; blank lines and `#` comments skipped; a repeated tag is an error."""
    path = Path(path)
    if not path.is_file():
        raise TaggerError(f"{path}: no such vocabulary file")
    words: list[str] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        word = line.split("#", 1)[0].strip()
        if word in words:
            raise TaggerError(f"{path}:{lineno}: {word!r} is listed twice")
        if word:
            words.append(word)
    if not words:
        raise TaggerError(f"{path}: the vocabulary is empty")
    return words
