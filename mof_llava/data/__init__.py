"""Training data: LLaVA's JSON/JSONL records -> tokenised, labelled samples -> batches.

    records.py      schema validation and `<image>` normalisation of one record
    record_file.py  lazy random access through a cached byte-offset index (JSON array or JSONL)
    samples.py      render + encode + labels from character spans + fitting into max_length
    lengths.py      token lengths of every record, computed once in parallel and cached
    dataset.py      `LlavaDataset`
    collator.py     `LlavaCollator` (right padding, pixel_values of the rows with images)
    sampler.py      `build_train_sampler` (LLaVA's group_by_modality_length on real token lengths)
    packing.py      `PackedBatchSampler` (data.packing: token-balanced packed micro-batches per step);
                    its batches go through `PackedCollator` (collator.py)
    skips.py        `SkippedSample`, `SkipTally`: samples left out are counted and reported
    config.py       `DataConfig` with LLaVA-1.5's per-stage defaults
    images.py       `load_rgb_image`, the one way images are opened
    check.py        the report of `mof-llava data check`

See docs/data.md for how the pieces fit into a training loop.
"""

from importlib import import_module

_EXPORTS = {
    "DataConfig": "config",
    "LlavaDataset": "dataset",
    "LlavaCollator": "collator",
    "PackedCollator": "collator",
    "PackedBatchSampler": "packing",
    "build_train_sampler": "sampler",
    "ModalityLengthGroupedSampler": "sampler",
    "order_hash": "sampler",
    "SkippedSample": "skips",
    "SkipTally": "skips",
    "RecordError": "records",
    "MalformedRecordsError": "record_file",
    "ImageLoadError": "images",
    "load_rgb_image": "images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy, so `mof_llava.data.images` does not pull in torch.
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
