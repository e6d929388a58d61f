"""The files a tagger reads: a tags file (`{image: [tags]}` or JSONL `{"image", "tags"}` lines) and
a vocabulary (one tag per line). Here, below both the taggers (`mof_llava.tags`) and evaluation
(`benchmarks.lion`, which reads a tags file to put LION's tag sentence in the prompts).
"""

from __future__ import annotations

import json
from pathlib import Path


class TaggerError(ValueError):
    """Bad tagger input (a tags file, a vocabulary, an image without tags); one line naming it."""


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
