"""LION's soft hint for image tags: one learnable vector in place of the `<tag_hint>` placeholder.

LION's prompt starts "According to <extra_id_0>, you are allowed to use or partially use the following
tags: [...]" and replaces the embedding of `<extra_id_0>` by a learnable `soft_prompt_hint` of the
LLM's width (`lion_t5.py:131-133, 222-228`, JiuTian-VL/JiuTian-LION), so the model learns how far to
trust the (noisy) tags. Here the processor writes `config.tag_hint_token_id` for the marker
(data/tag_prompt.py builds the prompt) and the model overwrites those positions' embeddings with
`TagSoftPrompt.vector`: every other position is left exactly as the LLM's embedding made it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..atomic import atomic_path


class TagSoftPrompt(nn.Module):
    def __init__(self, hidden_size: int, init_std: float):
        super().__init__()
        # LION draws it from N(0, initializer_factor), the scale of T5's token embeddings at init; here
        # the LLM's initializer_range, the scale of a Llama's token embeddings at init.
        self.init_std = float(init_std)
        self.vector = nn.Parameter(torch.empty(hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.vector.device.type != "meta":
            nn.init.normal_(self.vector, std=self.init_std)

    def forward(self, inputs_embeds: torch.Tensor, hint_mask: torch.Tensor) -> torch.Tensor:
        """`inputs_embeds` [batch, seq, d] with the vector at every position where `hint_mask` [batch, seq]."""
        return torch.where(hint_mask.unsqueeze(-1), self.vector.to(inputs_embeds.dtype), inputs_embeds)


# A LoRA run's artifact holds peft's weights only: the trained vector is saved beside them in this file.
WEIGHTS_NAME = "tag_prompt.safetensors"
KEY = "tag_prompt.vector"  # its name in the model's state dict


def save_tag_vector(state_dict: dict[str, torch.Tensor], directory: str | Path) -> Path:
    """Write the vector of a model state dict (gathered, under ZeRO-3) to `directory`."""
    from safetensors.torch import save_file

    path = Path(directory) / WEIGHTS_NAME
    with atomic_path(path) as tmp:
        save_file({"vector": state_dict[KEY].detach().to("cpu").contiguous()}, str(tmp))
    return path


def load_tag_vector(prompt: TagSoftPrompt, directory: str | Path) -> None:
    """Load `save_tag_vector`'s file into `prompt`, its width matching exactly."""
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; the model has a tag soft prompt whose trained vector goes there")
    state = load_file(str(path))
    if set(state) != {"vector"} or state["vector"].shape != prompt.vector.shape:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        raise ValueError(f"{path}: holds {shapes}, not the model's tag vector of shape {tuple(prompt.vector.shape)}")
    prompt.load_state_dict(state, strict=True)
