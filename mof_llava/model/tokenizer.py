"""Loading an LLM's tokenizer: the one way every entry point does it.

LLaVA-1.5 and Vicuna-1.5 checkpoints ship a SentencePiece `tokenizer.model` and often no
`tokenizer.json`; transformers converts the SentencePiece model into a fast tokenizer at load time
(with `sentencepiece` and `protobuf`, both dependencies). A folder with neither file is refused: for
such a folder transformers builds an empty tokenizer that knows only its special tokens, and every
word would silently become `<unk>`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import first_line
from ..paths import check_model_path
from .configuration import MofLlavaConfigError

# A fast tokenizer's `tokenizer.json`, a SentencePiece model, or a byte-level BPE vocabulary + merges.
_VOCABULARY_FILES = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"))


class TokenizerLoadError(MofLlavaConfigError):
    """A tokenizer folder (or hub id) that cannot give a working tokenizer."""


def load_tokenizer(path: str | Path, **kwargs):
    """`AutoTokenizer.from_pretrained(path)` for a folder or hub id that holds a vocabulary; any failure is
    one line naming `path`."""
    from transformers import AutoTokenizer

    source = check_tokenizer_files(path)
    try:
        return AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError, KeyError) as err:
        # transformers falls back to tiktoken when SentencePiece cannot read tokenizer.model, and then
        # reports that tiktoken is missing; say what is wrong with the file instead.
        reason = _sentencepiece_problem(source) or first_line(err)
        raise TokenizerLoadError(f"{path}: cannot load the tokenizer: {reason}") from err


def check_tokenizer_files(path: str | Path, named_by: str = "tokenizer") -> str:
    """The folder (user expanded) or hub id to load `path` from; `ModelPathError` (naming `named_by`) when
    it is neither, `TokenizerLoadError` unless it holds one of the vocabulary files transformers can load."""
    check_model_path(path, named_by)
    local = Path(path).expanduser()
    source = str(local) if local.is_dir() else str(path)
    if not any(all(_has_file(source, name) for name in group) for group in _VOCABULARY_FILES):
        expected = ", ".join(" + ".join(group) for group in _VOCABULARY_FILES)
        where = "here" if local.is_dir() else "in the local hub cache or on the hub"
        raise TokenizerLoadError(f"{path}: no tokenizer vocabulary {where} (expected {expected})")
    return source


def _has_file(source: str, name: str) -> bool:
    if Path(source).is_dir():
        return (Path(source) / name).is_file()
    from transformers.utils import cached_file

    try:  # a hub id: the local cache, or the hub where a network exists
        return cached_file(source, name, _raise_exceptions_for_missing_entries=False) is not None
    except (OSError, ValueError):
        return False


def _sentencepiece_problem(source: str) -> str | None:
    model = Path(source) / "tokenizer.model"
    if not model.is_file():
        return None
    try:
        import google.protobuf  # noqa: F401  (transformers' SentencePiece conversion reads the model with it)
        import sentencepiece
    except ImportError:
        return "reading tokenizer.model needs the `sentencepiece` and `protobuf` packages"
    try:
        sentencepiece.SentencePieceProcessor(model_file=str(model))
    except (OSError, RuntimeError) as err:
        return f"{model.name} is not a SentencePiece model SentencePiece can read ({first_line(err)})"
    return None
