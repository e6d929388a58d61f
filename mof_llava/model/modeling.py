"""MoF-LLaVA: LLaVA-1.5 that sees through one or more frozen vision towers.

    pixel_values ─┬─ CLIP tower (frozen) ───┐
                  └─ DINOv2 tower (frozen) ──┴─ FeatureMixer (adapters + mixing) ─> visual tokens
    input_ids ── embeddings ── masked_scatter(visual tokens into the placeholder positions) ── LLM ── logits

- The processor has already expanded every `<image>` into `config.num_image_tokens` placeholder ids,
  so sequence lengths, attention masks and positions are final before the model runs; merging is one
  `masked_scatter`, with no per-sample loop.
- The mixer alone decides how tower features become visual tokens (mixer.py).
- LION's tag soft prompt (only with `config.tag_hint_token_id`): one learnable vector written at every
  `<tag_hint>` placeholder, before the visual tokens go in (tag_prompt.py).
- LION's mixture of adapters (only with `config.moa`): routers beside the LLM, hooked into its decoder
  layers' MLP path and routed by each sample's `task_ids` (moa.py).
- The language model is any transformers causal LM, kept whole (`AutoModelForCausalLM`), so its own
  head, tied embeddings, logit post-processing and loss (including `num_items_in_batch` under
  gradient accumulation) are used unchanged.
- Packed batches (`data.packing`, `mof_llava.data.collator.PackedCollator`) go through as they are:
  position ids restarting at every sample, no attention mask and `use_cache=False` reach the LLM,
  which confines attention to each sample from the restarts; the visual tokens fill the placeholders
  of every packed sample in order, as they do across the rows of a padded batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils.deprecation import deprecate_kwarg

from ..constants import IGNORE_INDEX
from .aggregator import ZeroInitLinear
from .configuration import MofLlavaConfig
from .mixer import FeatureMixer
from .moa import AdapterRouter, build_moa, hard_assignment
from .tag_prompt import TagSoftPrompt
from .towers import VisionTower

# One tensor that every tower reads, or one tensor per tower name.
PixelValues = torch.Tensor | Mapping[str, torch.Tensor]


def tower_input(pixel_values: PixelValues, name: str, towers) -> torch.Tensor:
    """The pixels tower `name` reads; a mapping must name exactly the towers in use."""
    if not isinstance(pixel_values, Mapping):
        return pixel_values
    if set(pixel_values) != set(towers):
        raise ValueError(
            f"per-tower pixel_values name the towers {sorted(pixel_values)}, the model uses {sorted(towers)}"
        )
    if len({tuple(v.shape) for v in pixel_values.values()}) > 1:
        shapes = {k: tuple(v.shape) for k, v in pixel_values.items()}
        raise ValueError(f"per-tower pixel_values must share one shape, got {shapes}")
    return pixel_values[name]


def pixels_to(pixel_values: PixelValues, device: torch.device) -> PixelValues:
    if isinstance(pixel_values, Mapping):
        return {name: value.to(device) for name, value in pixel_values.items()}
    return pixel_values.to(device)


class MofLlavaPreTrainedModel(PreTrainedModel):
    config_class = MofLlavaConfig
    config: MofLlavaConfig
    base_model_prefix = ""
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        # The adapters start from PyTorch's default Linear init, as LLaVA's projector does; towers and
        # the LLM are transformers models and initialise themselves. The aggregator's output
        # projections start at zero and its norms at the identity (aggregator.py).
        if isinstance(module, ZeroInitLinear):
            init.zeros_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, TagSoftPrompt):
            init.normal_(module.vector, std=module.init_std)
        elif isinstance(module, AdapterRouter):  # LION's gates: task k uses adapter k only (moa.py)
            init.copy_(module.gates, hard_assignment(*module.gates.shape[1:]))
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features)
                init.uniform_(module.bias, -bound, bound)


class MofLlavaForConditionalGeneration(MofLlavaPreTrainedModel, GenerationMixin):
    def __init__(self, config: MofLlavaConfig):
        super().__init__(config)
        towers = config.towers
        self.vision_towers = nn.ModuleDict(
            {t.name: VisionTower(t, config.image_size, tuple(config.image_mean), tuple(config.image_std)) for t in towers}
        )
        self.mixer = FeatureMixer(
            config.mixer_spec,
            towers,
            tower_grids=config.tower_grids,
            grid=config.mixed_grid,
            text_hidden_size=config.text_config.hidden_size,
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        text = config.text_config
        # LION's tag hint (tag_prompt.py), only when the config asks for it.
        self.tag_prompt = (
            TagSoftPrompt(text.hidden_size, getattr(text, "initializer_range", 0.02))
            if config.tag_hint_token_id is not None
            else None
        )
        # LION's mixture of adapters (moa.py), hooked onto the LLM's decoder layers, only when configured.
        self.moa = build_moa(config.moa_spec, config.text_config) if config.moa_spec is not None else None
        if self.moa is not None:
            self.moa.attach(self.language_model)
        self.post_init()

    # -- the LLM's embeddings and head ------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model.get_decoder()

    # -- vision -----------------------------------------------------------------------------------
    def get_image_features(self, pixel_values: PixelValues) -> torch.Tensor:
        """[n_images, 3, H, W] -> visual tokens [n_images, num_image_tokens, text_hidden_size].

        `pixel_values` may also map each tower's name to its own tensor, so that a corruption can
        reach one stream alone (preference/weakening.py `tower_pixels`); one tensor feeds every tower.
        """
        features, earlier = {}, {}
        for name in self.mixer.required_towers:
            # The tower's selected layer, plus the earlier layers its aggregator reads (if any).
            features[name], *earlier[name] = self.vision_towers[name].hidden_states(
                tower_input(pixel_values, name, self.mixer.required_towers), self.mixer.tower_layers[name]
            )
        return self.mixer(features, earlier)

    def _dummy_visual_term(self, like: torch.Tensor) -> torch.Tensor:
        """A zero that depends on every tower and adapter in use.

        Added to the embeddings of a training batch without images, so every rank runs the same modules
        every step: otherwise ZeRO-3 (which gathers parameters module by module) hangs, and DDP finds
        adapters without gradients.
        """
        size = self.config.image_size
        blank = torch.zeros(1, 3, size, size, device=like.device, dtype=like.dtype)
        return self.get_image_features(blank).float().sum().to(like.dtype) * 0.0

    # -- forward ----------------------------------------------------------------------------------
    # transformers 5 names the KV cache `cache` (`past_key_values` goes in 5.40), as the LLM and generate() do.
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: PixelValues | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        task_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`task_ids` ([batch] or, for packed rows, [batch, seq]; indices into `config.moa_spec.tasks`)
        route LION's mixture of adapters; None routes every token to its default task."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            image_mask = input_ids == self.config.image_token_id
            hint_mask = None if self.tag_prompt is None else input_ids == self.config.tag_hint_token_id
            placeholders = image_mask if hint_mask is None else image_mask | hint_mask
            # Placeholder ids may lie outside the vocabulary (LLaVA's -200): embed a valid id there,
            # the visual tokens (and the tag hint vector) overwrite it below.
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(placeholders, 0))
            if hint_mask is not None:
                inputs_embeds = self.tag_prompt(inputs_embeds, hint_mask)
            if labels is not None:
                labels = labels.masked_fill(placeholders, IGNORE_INDEX)  # placeholders are never targets

        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids: the placeholders say where the visual tokens go")
            visual = self.get_image_features(pixels_to(pixel_values, inputs_embeds.device))
            n_slots, n_tokens = int(image_mask.sum()), visual.shape[0] * visual.shape[1]
            if n_slots != n_tokens:
                raise ValueError(
                    f"input_ids hold {n_slots} image placeholders but {visual.shape[0]} image(s) give "
                    f"{visual.shape[0]} x {visual.shape[1]} = {n_tokens} visual tokens; build inputs with "
                    "this model's processor (it expands each <image> into num_image_tokens placeholders)"
                )
            inputs_embeds = inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), visual.to(inputs_embeds.dtype))
        elif self.training:
            inputs_embeds = inputs_embeds + self._dummy_visual_term(inputs_embeds)

        if self.moa is not None:
            self.moa.route(task_ids)
        elif task_ids is not None:
            raise ValueError("task_ids route LION's mixture of adapters, which this model has not (config.moa)")
        return self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
