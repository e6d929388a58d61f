"""BPO's image-side negatives: the MLLM answers about a weakened image, so its answer follows the
LLM's text prior instead of the picture (BPO's `mllm-hal`).

The answer comes from the model's own `generate()` on the weakened pixels (per tower, so one stream
alone can be weakened; weakening.py). An optional contrast mixes in the next-token log-probs of a
second branch on the other image:

    amplify_bias  (1 + α)·log p(·|weakened) − α·log p(·|clean)   pushes further toward the text prior
    vcd           (1 + α)·log p(·|clean) − α·log p(·|weakened)   VCD's hallucination-*reducing* direction,
                                                                what BPO's released script runs

with VCD's plausibility cutoff: tokens whose probability under the conditioning branch is below
β times its most likely token's are excluded. The second branch keeps its **own** KV cache and feeds
every generated token through it: BPO's and VCD's released code reuse the first branch's cache after
the first token, so only that token is contrastive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .weakening import DiffusionNoise, GaussianBlur, PatchMask, RandomCrop, sample_generator, tower_pixels

Contrast = Literal["none", "amplify_bias", "vcd"]
CONTRASTS = ("none", "amplify_bias", "vcd")
CORRUPTIONS = ("noise", "blur", "mask", "crop")


@dataclass(frozen=True)
class Weakening:
    """Which corruption, how strong, which tower's input it reaches, and the seed of its draws."""

    corruption: str = "noise"
    noise_step: int = 900  # BPO's t
    blur_sigma: float = 4.0
    mask_ratio: float = 0.5
    crop_scale: float = 0.5
    target: str = "both"  # or a tower's name (clip, dinov2)
    seed: int = 0

    def corruption_fn(self):
        makers = {
            "noise": lambda: DiffusionNoise(self.noise_step),
            "blur": lambda: GaussianBlur(self.blur_sigma),
            "mask": lambda: PatchMask(ratio=self.mask_ratio),
            "crop": lambda: RandomCrop(self.crop_scale),
        }
        if self.corruption not in makers:
            raise ValueError(f"corruption must be one of {', '.join(CORRUPTIONS)}, got {self.corruption!r}")
        return makers[self.corruption]()


@dataclass(frozen=True)
class Decoding:
    """temperature 0 is greedy; BPO samples at 0.2 with up to 1024 new tokens."""

    temperature: float = 0.2
    top_p: float | None = None
    max_new_tokens: int = 1024
    contrast: Contrast = "none"
    cd_alpha: float = 1.0  # BPO's (and VCD's) α
    cd_beta: float = 0.2  # the plausibility cutoff; 0 keeps every token
    seed: int = 0


def seed_batch(seed: int, first_id: str) -> None:
    """Seed torch's global generator (which `generate()` samples from) for one batch, from the run's
    seed and the batch's first id: a resumed run redraws the same batch the same way."""
    torch.manual_seed(int(torch.randint(2**62, (1,), generator=sample_generator(seed, first_id))))


class ContrastiveLogits(LogitsProcessor):
    """(1 + α)·log p_main − α·log p_other, where p_other is the model's next-token distribution on
    `other_pixels`, computed by this processor with its own KV cache (every step sees the whole
    sequence so far under the other image). `history` keeps the other branch's log-probs when asked."""

    def __init__(self, model, input_ids, attention_mask, other_pixels, alpha: float, beta: float, keep=False):
        self.model, self.other_pixels = model, other_pixels
        self.alpha, self.log_beta = alpha, (math.log(beta) if beta > 0 else None)
        self.mask, self.seen, self.cache = attention_mask, 0, None
        self.prompt_length = input_ids.shape[1]
        self.history: list[torch.Tensor] | None = [] if keep else None

    def other_logps(self, input_ids: torch.Tensor) -> torch.Tensor:
        new = input_ids[:, self.seen :]
        if self.seen:  # generated tokens are real tokens: the mask grows by ones
            self.mask = torch.cat([self.mask, self.mask.new_ones(new.shape)], dim=1)
        positions = (self.mask.cumsum(-1) - 1).clamp(min=0)[:, -new.shape[1] :]  # left padding
        out = self.model(
            input_ids=new,
            pixel_values=None if self.seen else self.other_pixels,
            attention_mask=self.mask,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.cache, self.seen = out.cache, input_ids.shape[1]
        return out.logits[:, -1].float().log_softmax(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        other = self.other_logps(input_ids)
        if self.history is not None:
            self.history.append(other)
        main = scores.float().log_softmax(-1)
        mixed = (1 + self.alpha) * main - self.alpha * other
        if self.log_beta is not None:  # VCD's cutoff, on the conditioning branch
            cutoff = main.max(dim=-1, keepdim=True).values + self.log_beta
            mixed = mixed.masked_fill(main < cutoff, -float("inf"))
        return mixed.to(scores.dtype)


class WeakenedImageSampler:
    """Answers (image, prompt) batches on weakened images; each sample's corruption is seeded from
    (weakening seed, sample id), each batch's sampling from (decoding seed, its first id)."""

    def __init__(self, model, processor, weakening: Weakening, decoding: Decoding):
        if decoding.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {', '.join(CONTRASTS)}, got {decoding.contrast!r}")
        self.model, self.processor = model, processor
        self.weakening, self.decoding = weakening, decoding
        self.corruption = weakening.corruption_fn()
        self.towers = list(model.mixer.required_towers)
        self.last_contrast: ContrastiveLogits | None = None

    def weaken(self, pixels: torch.Tensor, ids: list[str]) -> dict[str, torch.Tensor]:
        """{tower: [n, 3, H, W]}: each sample weakened with its own seeded draw, for the targeted towers."""
        per_sample = [
            tower_pixels(
                p,
                self.corruption,
                sample_generator(self.weakening.seed, i),
                self.towers,
                self.weakening.target,
            )
            for p, i in zip(pixels, ids, strict=True)
        ]
        return {name: torch.stack([s[name] for s in per_sample]) for name in self.towers}

    def inputs(self, ids: list[str], images: list[Any], prompts: list[str]) -> tuple[dict, dict, dict]:
        """(text inputs, clean per-tower pixels, weakened per-tower pixels) on the model's device."""
        encoded = self.processor(text=prompts, images=images, padding=True, padding_side="left")
        device, dtype = self.model.device, self.model.dtype
        clean = encoded.pop("pixel_values")
        weak = self.weaken(clean, ids)
        move = lambda pixels: {k: v.to(device=device, dtype=dtype) for k, v in pixels.items()}  # noqa: E731
        text = {k: v.to(device) for k, v in encoded.items()}
        return text, move({name: clean for name in self.towers}), move(weak)

    def answer(self, ids: list[str], images: list[Any], prompts: list[str]) -> list[str]:
        text, clean, weak = self.inputs(ids, images, prompts)
        d = self.decoding
        main, other = (clean, weak) if d.contrast == "vcd" else (weak, clean)
        processors = LogitsProcessorList()
        if d.contrast != "none":
            self.last_contrast = ContrastiveLogits(
                self.model, text["input_ids"], text["attention_mask"], other, d.cd_alpha, d.cd_beta
            )
            processors.append(self.last_contrast)
        seed_batch(d.seed, ids[0])
        with torch.inference_mode():
            out = self.model.generate(
                **text,
                pixel_values=main,
                logits_processor=processors,
                do_sample=d.temperature > 0,
                temperature=d.temperature or None,
                top_p=d.top_p if d.temperature > 0 else None,
                max_new_tokens=d.max_new_tokens,
                num_beams=1,
            )
        new = out[:, text["input_ids"].shape[1] :]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]
