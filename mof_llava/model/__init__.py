"""The MoF-LLaVA model: config, towers, adapters, mixer, model, processor and builder.

Importing this package registers the model with transformers' Auto classes (`AutoConfig`,
`AutoModelForImageTextToText`, `AutoProcessor`), so saved checkpoints load through them without
`trust_remote_code`. `from mof_llava import <any model class>` imports it, and so registers, too.
"""

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from .builder import ModelRecipe, TowerRecipe, build_model, llava15_recipe, mof_recipe
from .configuration import AggregatorSpec, MixerSpec, MofLlavaConfig, MofLlavaConfigError, TowerSpec
from .modeling import MofLlavaForConditionalGeneration, MofLlavaPreTrainedModel
from .processing import EncodedText, MofLlavaProcessor

AutoConfig.register(MofLlavaConfig.model_type, MofLlavaConfig, exist_ok=True)
AutoModelForImageTextToText.register(MofLlavaConfig, MofLlavaForConditionalGeneration, exist_ok=True)
AutoProcessor.register(MofLlavaConfig, MofLlavaProcessor, exist_ok=True)

__all__ = [
    "AggregatorSpec",
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
