"""`CLIPZeroShotTagger`: tags by zero-shot classification over a fixed vocabulary with a full CLIP
checkpoint (its text tower embeds the vocabulary, its vision tower the image).

Each word is embedded once as `prompt.format(word)` ("a photo of a dog."); an image's tags are the
`top_k` words by cosine similarity whose softmax probability over the vocabulary (at CLIP's learned
logit scale) is at least `min_probability`, best first. This approximates RAM (a multi-label tagger
trained for the job) and is a fallback for when RAM is not installed: a softmax over the vocabulary
ranks words against each other, it does not say which are present.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..data.images import DEFAULT_IMAGE_LOADING, load_rgb_image
from .taggers import ImageRef, TaggerError

DEFAULT_PROMPT = "a photo of a {}."  # CLIP's own zero-shot prompt


class CLIPZeroShotTagger:
    def __init__(
        self,
        checkpoint: str | Path,
        vocabulary: Sequence[str],
        *,
        top_k: int = 5,
        min_probability: float = 0.0,
        prompt: str = DEFAULT_PROMPT,
        image_loading: str = DEFAULT_IMAGE_LOADING,
        device: str = "cpu",
    ):
        from transformers import AutoConfig

        from ..benchmarks.mmvp_vlm import load_contrastive_model, text_padding

        if "{}" not in prompt:
            raise TaggerError(f"the zero-shot prompt {prompt!r} needs a {{}} where the word goes")
        if top_k < 1 or not 0 <= min_probability <= 1:
            raise TaggerError(
                f"top_k must be at least 1 and min_probability in [0, 1], got {top_k}, {min_probability}"
            )
        model_type = AutoConfig.from_pretrained(checkpoint).model_type
        if model_type != "clip":  # a full CLIPModel: a vision tower alone has no text side to embed words
            raise TaggerError(
                f"{checkpoint}: the zero-shot tagger takes a full CLIP checkpoint, this is {model_type!r}"
            )
        self.model, self.processor, _ = load_contrastive_model(checkpoint, device)
        self.vocabulary, self.top_k, self.min_probability = list(vocabulary), top_k, min_probability
        self.image_loading, self.device = image_loading, device
        texts = [prompt.format(word) for word in self.vocabulary]
        inputs = self.processor(text=texts, return_tensors="pt", **text_padding(model_type))
        with torch.no_grad():
            features = self.model.get_text_features(
                **{k: v.to(device) for k, v in inputs.items()}
            ).pooler_output
        self.text_embeddings = torch.nn.functional.normalize(features.float(), dim=-1)

    def probabilities(self, images: Sequence) -> torch.Tensor:
        """[n_images, vocabulary] softmax over the vocabulary at CLIP's logit scale."""
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        with torch.no_grad():
            features = self.model.get_image_features(pixel_values=pixels).pooler_output
            image_embeddings = torch.nn.functional.normalize(features.float(), dim=-1)
            logits = self.model.logit_scale.exp().float() * image_embeddings @ self.text_embeddings.T
        return logits.softmax(dim=-1).cpu()

    def tag(self, images: Sequence[ImageRef]) -> list[list[str]]:
        probabilities = self.probabilities([load_rgb_image(ref.path, self.image_loading) for ref in images])
        k = min(self.top_k, len(self.vocabulary))
        values, indices = probabilities.topk(k, dim=-1)
        return [
            [self.vocabulary[int(i)] for p, i in zip(row_p, row_i) if float(p) >= self.min_probability]
            for row_p, row_i in zip(values, indices)
        ]
