"""Self-distillation in DINOv2's spirit, for a tiny `Dinov2Model`: no labels, no captions.

A student and an EMA teacher (same architecture) see different crops of the same picture. Each
projects its CLS token through a head onto `prototypes` unit vectors; the student's distribution
over prototypes must match the teacher's centred, sharpened one on every other view (DINO's loss).
iBOT's masked patch loss is added: the student sees some patches of the global crops replaced by
the mask token and must predict, at those patches, the teacher's prototype distribution of the
unmasked picture. Centres are running means of the teacher's outputs, which keeps it from
collapsing onto one prototype. Optionally (`pixel_dim` > 0) a linear head on the student's patch
tokens predicts each patch's own pixels, masked or not (a masked-image-modelling term, as in SimMIM
and MAE), so that the tokens must keep what is drawn inside their patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProtoHead(nn.Module):
    """MLP -> unit bottleneck -> cosine with unit prototypes (DINO's weight-normed last layer)."""

    def __init__(self, width: int, hidden: int, bottleneck: int, prototypes: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.randn(prototypes, bottleneck) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(x), dim=-1) @ F.normalize(self.prototypes, dim=-1).T


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, centre: torch.Tensor, t_s: float, t_t: float):
    """Cross-entropy of the student's softmax(student / t_s) against softmax((teacher - centre) / t_t)."""
    target = F.softmax((teacher - centre) / t_t, dim=-1).detach()
    return -(target * F.log_softmax(student / t_s, dim=-1)).sum(-1).mean()


class SelfDistiller(nn.Module):
    """Student encoder + heads; the teacher is a deep copy updated by `update_teacher`."""

    def __init__(
        self, encoder: nn.Module, hidden: int = 128, bottleneck: int = 32, prototypes: int = 128, pixel_dim: int = 0
    ):
        super().__init__()
        width = encoder.config.hidden_size
        self.encoder = encoder
        self.cls_head = ProtoHead(width, hidden, bottleneck, prototypes)
        self.patch_head = ProtoHead(width, hidden, bottleneck, prototypes)
        self.register_buffer("cls_centre", torch.zeros(prototypes))
        self.register_buffer("patch_centre", torch.zeros(prototypes))
        # Made only when asked, so towers trained without it keep their initialisation.
        self.pixel_head = nn.Linear(width, pixel_dim) if pixel_dim else None

    def outputs(self, pixels: torch.Tensor, mask: torch.Tensor | None = None):
        """(CLS logits [n, K], patch logits [n, P, K], patch tokens [n, P, D]) after the final LayerNorm."""
        hidden = self.encoder(pixel_values=pixels, bool_masked_pos=mask).last_hidden_state
        return self.cls_head(hidden[:, 0]), self.patch_head(hidden[:, 1:]), hidden[:, 1:]


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """[n, C, H, W] -> [n, P, patch * patch * C], patches in the encoder's row-major order."""
    n, c, h, w = pixels.shape
    grid = pixels.reshape(n, c, h // patch, patch, w // patch, patch)
    return grid.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // patch) * (w // patch), patch * patch * c)


@torch.no_grad()
def update_teacher(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)


@torch.no_grad()
def update_centre(centre: torch.Tensor, logits: torch.Tensor, momentum: float = 0.9) -> None:
    centre.mul_(momentum).add_(logits.reshape(-1, logits.shape[-1]).mean(0), alpha=1 - momentum)


def random_patch_mask(n: int, patches: int, ratio: tuple[float, float], generator: torch.Generator):
    """[n, patches] bool: in half the pictures a random `ratio` share of patches masked, none in the rest."""
    share = torch.empty(n, 1).uniform_(ratio[0], ratio[1], generator=generator)
    share[n // 2 :] = 0.0
    return torch.rand(n, patches, generator=generator) < share
