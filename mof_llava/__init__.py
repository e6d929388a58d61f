"""mof-llava: LLaVA-1.5 with a mixture of vision features (CLIP + DINOv2), additive or interleaved.

`import mof_llava` is light: it does not import torch or transformers, so the `mof-llava` command
starts fast. The model classes load on first use (`from mof_llava import MofLlavaConfig` or
`mof_llava.MofLlavaConfig`), and importing `mof_llava.model` registers them with transformers' Auto
classes, so `AutoModelForImageTextToText.from_pretrained(dir)`, `AutoConfig` and `AutoProcessor` load
our checkpoints without `trust_remote_code`. When transformers is already imported, `import mof_llava`
registers at once, as it always did; otherwise import `mof_llava.model` (or any model class) first.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

# Public names that live in mof_llava.model, loaded on first attribute access (PEP 562).
_MODEL_NAMES = (
    "MixerSpec",
    "ModelRecipe",
    "MofLlavaConfig",
    "MofLlavaConfigError",
    "MofLlavaForConditionalGeneration",
    "MofLlavaProcessor",
    "TowerRecipe",
    "TowerSpec",
    "build_model",
    "llava15_recipe",
    "mof_recipe",
)

__all__ = list(_MODEL_NAMES)


def __getattr__(name: str):
    if name in _MODEL_NAMES:
        value = getattr(importlib.import_module(".model", __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODEL_NAMES))


# Whoever imported transformers before us is about to use its Auto classes: register now, so that
# `import transformers; import mof_llava; AutoModel...from_pretrained(dir)` works. Someone who has
# not imported it yet pays nothing here.
if "transformers" in sys.modules:
    importlib.import_module(".model", __name__)
