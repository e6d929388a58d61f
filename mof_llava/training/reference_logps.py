"""Reference `precomputed`: the starting model's response log-probs of every pair, computed once before
training and cached in `<output_dir>/reference_logps.safetensors`; training then runs no reference
forward and keeps no second model (so it works under ZeRO-3, which would not partition a copy).

The cache is written by rank 0 before the Trainer (and DeepSpeed) exists, with the starting model:
stage 3 has just wrapped it, LoRA's B is still zero (or the LLM is untouched), so the model is its own
reference. A resumed run reads the cache back; it names the pairs' fingerprint and is refused when
that differs from the data's.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_path
from ..data.skips import SkippedSample
from .config import ConfigError

logger = logging.getLogger(__name__)
CACHE = "reference_logps.safetensors"


def load_or_compute(
    model, dataset, collator, batch_size: int, chunk_size: int, output_dir: Path, device
) -> torch.Tensor:
    """[pairs, 2] reference log-probs (chosen, rejected) of `dataset`: the cache when it holds these
    pairs, else computed (rank 0 only calls this before the others read the cache)."""
    path = Path(output_dir) / CACHE
    fingerprint = _fingerprint(dataset)
    if path.is_file():
        return read(path, fingerprint)
    logps = compute(model, dataset, collator, batch_size, chunk_size, device)
    with atomic_path(path) as tmp:
        save_file({"logps": logps.contiguous()}, str(tmp), metadata={"pairs": fingerprint})
    logger.info("reference log-probs of %d pairs written to %s", len(dataset), path)
    return logps


def read(path: Path, fingerprint: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as handle:
        cached = (handle.metadata() or {}).get("pairs")
        if cached != fingerprint:
            raise ConfigError(
                f"{path}: reference log-probs of other pairs than data.data_path's; delete it to compute them again"
            )
        return handle.get_tensor("logps")


def compute(model, dataset, collator, batch_size: int, chunk_size: int, device) -> torch.Tensor:
    """The model's summed response log-probs of every pair, in dataset order (NaN for a pair whose
    image could not be read: training skips it too)."""
    from .preference_trainer import response_logps

    was_training = model.training
    model.to(device).eval()
    out = torch.full((len(dataset), 2), float("nan"), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            kept = [start + k for k, item in enumerate(items) if not isinstance(item, SkippedSample)]
            if not kept:
                continue
            batch = collator(items)
            inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            logps, _, _ = response_logps(model, inputs, inputs.pop("labels"), chunk_size)
            out[kept] = torch.stack(logps.double().cpu().chunk(2), dim=1)
    model.train(was_training)
    return out


def _fingerprint(dataset) -> str:
    return hashlib.sha256(dataset.records.index.tobytes()).hexdigest()
