"""A tiny random LLM whose tokenizer folder is laid out like Vicuna-1.5's and LLaVA-1.5's: a
SentencePiece `tokenizer.model` with `tokenizer_config.json` and `special_tokens_map.json`, and no
`tokenizer.json`. The SentencePiece model itself is not made here: tests pass a real one
(tests/fixtures/tokenizers/)."""

from __future__ import annotations

import shutil
from pathlib import Path

SENTENCEPIECE_FOLDER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def copy_sentencepiece_tokenizer(tokenizer_folder: str | Path, directory: str | Path) -> Path:
    """Copy the SentencePiece tokenizer files of `tokenizer_folder` into `directory`, removing any
    `tokenizer.json` there, so that loading has to go through the SentencePiece model."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tokenizer.json").unlink(missing_ok=True)
    for name in SENTENCEPIECE_FOLDER_FILES:
        shutil.copyfile(Path(tokenizer_folder) / name, directory / name)
    return directory


def save_sentencepiece_llm(
    directory: str | Path, tokenizer_folder: str | Path, hidden_size: int = 16, seed: int = 0
) -> Path:
    """A tiny random `LlamaForCausalLM` with one embedding row per SentencePiece piece, saved with the
    SentencePiece tokenizer files of `tokenizer_folder` (and no tokenizer.json)."""
    import sentencepiece
    import torch
    from transformers import LlamaForCausalLM

    from .tiny import tiny_llama_config

    vocab_size = sentencepiece.SentencePieceProcessor(
        model_file=str(Path(tokenizer_folder) / "tokenizer.model")
    ).vocab_size()
    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config(vocab_size, hidden_size=hidden_size)).save_pretrained(directory)
    return copy_sentencepiece_tokenizer(tokenizer_folder, directory)
