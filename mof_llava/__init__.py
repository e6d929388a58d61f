"""mof-llava: LLaVA-1.5 with a mixture of vision features (CLIP + DINOv2), additive or interleaved.

Importing the package registers the model with transformers' Auto classes, so
`AutoModelForImageTextToText.from_pretrained(dir)`, `AutoConfig` and `AutoProcessor` load our
checkpoints without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from .model import (
    MixerSpec,
    ModelRecipe,
    MofLlavaConfig,
    MofLlavaConfigError,
    MofLlavaForConditionalGeneration,
    MofLlavaProcessor,
    TowerRecipe,
    TowerSpec,
    build_model,
    llava15_recipe,
    mof_recipe,
)

__version__ = "0.1.0"

AutoConfig.register(MofLlavaConfig.model_type, MofLlavaConfig, exist_ok=True)
AutoModelForImageTextToText.register(MofLlavaConfig, MofLlavaForConditionalGeneration, exist_ok=True)
AutoProcessor.register(MofLlavaConfig, MofLlavaProcessor, exist_ok=True)

__all__ = [
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
]
