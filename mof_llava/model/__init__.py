"""The MoF-LLaVA model: config, towers, adapters, mixer, model, processor and builder."""

from .builder import ModelRecipe, TowerRecipe, build_model, llava15_recipe, mof_recipe
from .configuration import MixerSpec, MofLlavaConfig, MofLlavaConfigError, TowerSpec
from .modeling import MofLlavaForConditionalGeneration, MofLlavaPreTrainedModel
from .processing import EncodedText, MofLlavaProcessor

__all__ = [
    "EncodedText",
    "MixerSpec",
    "ModelRecipe",
    "MofLlavaConfig",
    "MofLlavaConfigError",
    "MofLlavaForConditionalGeneration",
    "MofLlavaPreTrainedModel",
    "MofLlavaProcessor",
    "TowerRecipe",
    "TowerSpec",
    "build_model",
    "llava15_recipe",
    "mof_recipe",
]
