"""LION's soft hint for image tags: one learnable vector in place of the `<tag_hint>` placeholder.

LION's prompt starts "According to <extra_id_0>, you are allowed to use or partially use the following
tags: [...]" and replaces the embedding of `<extra_id_0>` by a learnable `soft_prompt_hint` of the
LLM's width (`lion_t5.py:131-133, 222-228`, JiuTian-VL/JiuTian-LION), so the model learns how far to
trust the (noisy) tags. Here the processor writes `config.tag_hint_token_id` for the marker
(data/tag_prompt.py builds the prompt) and the model overwrites those positions' embeddings with
`TagSoftPrompt.vector`: every other position is left exactly as the LLM's embedding made it.
"""

from __future__ import annotations

import torch
from torch import nn


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
