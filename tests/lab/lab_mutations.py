"""Fixed-seed lab runs through the real chain, and the bugs they must catch, each a monkeypatch of
the real code for one training and evaluation (test_lab_mllm_floor.py, test_lab_learns.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from mof_llava.constants import IGNORE_INDEX
from mof_llava.data import samples
from mof_llava.lab import mllm
from mof_llava.model import mixer, towers


def prepare(base: Path, size: dict) -> Path:
    """Data and the language-pre-trained LLM, once per module; each run copies them."""
    mllm.run_lab(mllm.LabConfig(out=str(base), variants=(), **size), say=lambda _: None)
    return base


def run_variant(prepared: Path, size: dict, name: str, variant: str) -> mllm.VariantScores:
    """One variant trained and scored on one seed, in its own copy of the prepared folder."""
    out = prepared.parent / name
    if not out.exists():
        shutil.copytree(prepared, out)
    (run,) = mllm.run_lab(mllm.LabConfig(out=str(out), variants=(variant,), **size), say=lambda _: None).runs
    return run


def mean(scores: dict[str, float], attributes) -> float:
    return sum(scores[a] for a in attributes) / len(attributes)


def shift_labels(monkeypatch) -> None:
    """Each answer token supervised one place late."""
    encode = samples._encode

    def shifted(*args, **kwargs):
        ids, labels, offsets = encode(*args, **kwargs)
        moved = np.full_like(labels, IGNORE_INDEX)
        moved[1:] = labels[:-1]
        return ids, moved, offsets

    monkeypatch.setattr(samples, "_encode", shifted)


def scramble_interleave(monkeypatch) -> None:
    """The mixer's visual tokens in a new random order every forward pass."""
    forward = mixer.FeatureMixer.forward
    generator = torch.Generator().manual_seed(0)

    def scrambled(self, *args, **kwargs):
        tokens = forward(self, *args, **kwargs)
        return tokens[:, torch.randperm(tokens.shape[1], generator=generator)]

    monkeypatch.setattr(mixer.FeatureMixer, "forward", scrambled)


def read_layer_zero(monkeypatch) -> None:
    """Every tower read at hidden state 0 (its patch embeddings) instead of its configured layers."""
    hidden_states = towers.VisionTower.hidden_states

    def embeddings(self, pixel_values, layers):
        return hidden_states(self, pixel_values, tuple(0 for _ in layers))

    monkeypatch.setattr(towers.VisionTower, "hidden_states", embeddings)
