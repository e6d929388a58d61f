"""One check for the checkpoint paths a user names (config keys, command-line flags), before transformers
sees them: a missing local folder otherwise surfaces as `HFValidationError: Repo id must be in the
form ...` under several chained tracebacks, because anything that is not a folder is taken for a hub id."""

from __future__ import annotations

import os
from pathlib import Path

# Files one of which every model or tokenizer repository has; enough to tell a cached hub id.
_HUB_MARKERS = ("config.json", "tokenizer_config.json", "preprocessor_config.json")


class ModelPathError(FileNotFoundError):
    """A checkpoint path that cannot be loaded; the message names the key or flag that gave it."""


def check_model_path(path: str | os.PathLike, named_by: str, hub: bool = True, file_ok: bool = False) -> None:
    """Fail in one line, naming `named_by` (e.g. `model.llm` or `--model`), unless `path` is a local
    folder (or, with `file_ok`, a file) or (with `hub`) a hub id that can be fetched: a valid id that
    is in the local hub cache, or any valid id while downloads are allowed."""
    text = str(path)
    local = Path(text).expanduser()
    if local.is_dir() or (file_ok and local.is_file()):
        return
    if local.exists():
        raise ModelPathError(f"{named_by}: {text} is a file; expected a model folder")
    if not (hub and _is_hub_id(text)):
        raise ModelPathError(f"{named_by}: {'file or folder' if file_ok else 'folder'} not found: {text}")
    if hub_offline() and not _in_hub_cache(text):
        raise ModelPathError(
            f"{named_by}: folder not found: {text} (nor can it be downloaded as a hub id: HF_HUB_OFFLINE is set "
            "and the local hub cache does not hold it)"
        )


def hub_offline() -> bool:
    """Offline as huggingface_hub reads it at import, or HF_HUB_OFFLINE set since then (same rule)."""
    from huggingface_hub import is_offline_mode

    return is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _is_hub_id(text: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in _HUB_MARKERS)
