"""mof-llava: LLaVA-1.5 with a mixture of vision features (CLIP + DINOv2), additive or interleaved.

`import mof_llava` is light: it does not import torch or transformers, so the `mof-llava` command
starts fast. The model classes load on first use (`from mof_llava import MofLlavaConfig` or
`mof_llava.MofLlavaConfig`). They are registered with transformers' Auto classes as soon as both
packages are imported, in either order, so after `import mof_llava`
`AutoModelForImageTextToText.from_pretrained(dir)`, `AutoConfig` and `AutoProcessor` load our
checkpoints without `trust_remote_code`, as they always did.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
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


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Registers our classes with transformers' Auto classes right after `transformers` is imported,
    so `import mof_llava` then `AutoModelForImageTextToText.from_pretrained(dir)` works as it always
    did, while `import mof_llava` alone (the CLI's --help) never imports transformers."""

    def find_spec(self, name, path=None, target=None):
        if name != "transformers":
            return None
        sys.meta_path.remove(self)  # once; the real finders locate the package
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _ThenRegister(spec.loader)
        return spec


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        if "mof_llava.model" not in sys.modules:  # it registers itself (and may be what imports transformers)
            importlib.import_module(".model", __name__)


# Whoever imported transformers before us is about to use its Auto classes: register now. Otherwise
# register once transformers is imported; someone who never imports it pays nothing.
if "transformers" in sys.modules:
    importlib.import_module(".model", __name__)
else:
    sys.meta_path.insert(0, _RegisterAfterTransformers())
