"""The DPO objective as pure functions: summed response log-probs from hidden states, and the losses.

A batch is laid out as trl and BPO do it: one forward over `[chosen; rejected]` (the image batch
repeated), so every per-sequence tensor here is split in halves with `split_pair`.

`sequence_logps` never builds full-vocabulary logits for every position: it keeps only the positions
whose label is supervised and runs the LM head over them in chunks; under autograd each chunk is
checkpointed, so the backward pass recomputes one chunk's logits at a time instead of storing them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..constants import IGNORE_INDEX

LossType = Literal["sigmoid", "ipo", "hinge"]
LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "hinge")
DEFAULT_BETA = 0.1  # BPO's (the TrainingArguments default its script keeps)
DEFAULT_CHUNK = 1024


def response_labels(labels: torch.Tensor, input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """`labels` with every visual placeholder position ignored, as the model's forward does: the
    placeholders (2×N of them when the towers are interleaved) are never targets."""
    return labels.masked_fill(input_ids == image_token_id, IGNORE_INDEX)


def _chunk_logps(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = lm_head(hidden)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits: softmax in fp32
    return logits.log_softmax(dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)


def sequence_logps(
    hidden_states: torch.Tensor, lm_head: nn.Module, labels: torch.Tensor, chunk_size: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of the supervised tokens, number of them) per sequence.

    `hidden_states` [B, T, H] are the LLM's last hidden states; position t predicts `labels[:, t + 1]`.
    Positions labelled IGNORE_INDEX (prompt, visual placeholders, padding) contribute nothing.
    """
    if hidden_states.shape[:2] != labels.shape:
        raise ValueError(
            f"hidden states {tuple(hidden_states.shape)} and labels {tuple(labels.shape)} disagree"
        )
    targets = labels[:, 1:]
    supervised = targets != IGNORE_INDEX
    rows = supervised.nonzero()[:, 0]
    hidden = hidden_states[:, :-1][supervised]  # [N, H]: only the positions that are scored
    tokens = targets[supervised]
    pieces = []
    for start in range(0, tokens.numel(), chunk_size):
        h, y = hidden[start : start + chunk_size], tokens[start : start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_logps, lm_head, h, y, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(lm_head, h, y))
    token_logps = (
        torch.cat(pieces)
        if pieces
        else hidden_states.new_zeros(0, dtype=torch.promote_types(hidden_states.dtype, torch.float32))
    )
    sums = token_logps.new_zeros(labels.shape[0]).index_add(0, rows, token_logps)
    return sums, supervised.sum(dim=1)


def split_pair(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen and rejected halves of a `[chosen; rejected]` batch."""
    if values.shape[0] % 2:
        raise ValueError(f"a [chosen; rejected] batch has an even size, got {values.shape[0]}")
    return values.chunk(2, dim=0)


@dataclass
class DPOOutput:
    loss: torch.Tensor  # scalar: the mean pair loss, plus the NLL term when asked for
    losses: torch.Tensor  # [pairs]
    chosen_rewards: torch.Tensor  # β·(log πθ(y+) − log πref(y+)), detached
    rejected_rewards: torch.Tensor

    def metrics(self, prefix: str = "rewards/") -> dict[str, float]:
        """The numbers trl logs: rewards, their margin and how often the chosen one is ahead."""
        margins = self.chosen_rewards - self.rejected_rewards
        return {
            f"{prefix}chosen": float(self.chosen_rewards.mean()),
            f"{prefix}rejected": float(self.rejected_rewards.mean()),
            f"{prefix}margins": float(margins.mean()),
            f"{prefix}accuracies": float((margins > 0).float().mean()),
        }


def pair_losses(
    chosen_logratios: torch.Tensor,
    rejected_logratios: torch.Tensor,
    beta: float,
    loss_type: LossType,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-pair loss from the policy/reference log-ratios of each response.

    sigmoid: −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ) (ε = label smoothing, cDPO); hinge: max(0, 1 − βΔ);
    ipo: (Δ − 1/(2β))², where IPO's log-ratios are per-token averages (see `dpo_loss`).
    """
    delta = chosen_logratios - rejected_logratios
    if loss_type == "sigmoid":
        return -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(
            -beta * delta
        )
    if label_smoothing:
        raise ValueError(f"label smoothing applies to the sigmoid loss, not {loss_type!r}")
    if loss_type == "hinge":
        return torch.relu(1 - beta * delta)
    if loss_type == "ipo":
        return (delta - 1 / (2 * beta)) ** 2
    raise ValueError(f"unknown DPO loss type {loss_type!r}; choose one of {', '.join(LOSS_TYPES)}")


def dpo_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    token_counts: torch.Tensor,
    beta: float = DEFAULT_BETA,
    loss_type: LossType = "sigmoid",
    label_smoothing: float = 0.0,
    nll_weight: float = 0.0,
) -> DPOOutput:
    """The DPO objective over a `[chosen; rejected]` batch of summed response log-probs.

    IPO divides each log-ratio by its response's token count, as trl does (its authors' choice: the
    squared loss would otherwise scale with the length). `nll_weight` adds that weight times the
    chosen responses' NLL per token (trl's RPO term).
    """
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label smoothing must lie in [0, 0.5), got {label_smoothing}")
    logratios = policy_logps - reference_logps.to(policy_logps)
    if loss_type == "ipo":
        logratios = logratios / token_counts.clamp(min=1).to(logratios)
    chosen, rejected = split_pair(logratios)
    losses = pair_losses(chosen, rejected, beta, loss_type, label_smoothing)
    loss = losses.mean()
    if nll_weight:
        chosen_logps, chosen_counts = split_pair(policy_logps)[0], split_pair(token_counts)[0]
        loss = loss + nll_weight * (-chosen_logps.sum() / chosen_counts.sum().clamp(min=1))
    raw_chosen, raw_rejected = split_pair((policy_logps - reference_logps.to(policy_logps)).detach())
    return DPOOutput(loss, losses, beta * raw_chosen, beta * raw_rejected)
