"""Loading an LLM's tokenizer: the one way every entry point does it.

LLaVA-1.5 and Vicuna-1.5 checkpoints ship a SentencePiece `tokenizer.model` and often no
`tokenizer.json`; transformers converts the SentencePiece model into a fast tokenizer at load time
(with `sentencepiece` and `protobuf`, both dependencies). A folder with neither file is refused: for
such a folder transformers builds an empty tokenizer that knows only its special tokens, and every
word would silently become `<unk>`.
"""

from __future__ import annotations

from pathlib import Path

from .configuration import MofLlavaConfigError

# A fast tokenizer's `tokenizer.json`, a SentencePiece model, or a byte-level BPE vocabulary + merges.
_VOCABULARY_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"))


class TokenizerLoadError(MofLlavaConfigError):
    """A tokenizer folder (or hub id) that cannot give a working tokenizer."""


def load_tokenizer(path: str | Path, **kwargs):
    """`AutoTokenizer.from_pretrained(path)` for a folder or hub id that holds a vocabulary; any failure is
    one line naming `path`."""
    from transformers import AutoTokenizer

    check_tokenizer_files(path)
    try:
        return AutoTokenizer.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, ImportError, KeyError) as err:
        raise TokenizerLoadError(f"{path}: cannot load the tokenizer: {_first_line(err)}") from err


def check_tokenizer_files(path: str | Path) -> None:
    """Raise `TokenizerLoadError` unless `path` holds one of the vocabulary files transformers can load."""
    local = Path(path).expanduser()
    if not local.is_dir() and (local.is_absolute() or str(path).startswith((".", "~"))):
        raise TokenizerLoadError(f"{path}: no such tokenizer folder")
    if not any(all(_has_file(path, name) for name in group) for group in _VOCABULARY_FILES):
        expected = ", ".join(" + ".join(group) for group in _VOCABULARY_FILES)
        raise TokenizerLoadError(
            f"{path}: no tokenizer vocabulary here (expected {expected}); "
            "a SentencePiece tokenizer.model needs the `sentencepiece` and `protobuf` packages"
        )


def _has_file(path: str | Path, name: str) -> bool:
    local = Path(path)
    if local.is_dir():
        return (local / name).is_file()
    from transformers.utils import cached_file

    try:  # a hub id: the local cache, or the hub where a network exists
        return cached_file(str(path), name, _raise_exceptions_for_missing_entries=False) is not None
    except (OSError, ValueError):
        return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
