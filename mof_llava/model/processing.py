"""`MofLlavaProcessor`: text and images in, model inputs out. It alone decides token expansion.

Text: each `<image>` marker becomes `num_image_tokens` placeholder ids `image_token_id`, both from the
model's config (`for_config`; the count is `configuration.num_visual_tokens`). The text between
markers is tokenised chunk by chunk, the first chunk with BOS, exactly as LLaVA's
`tokenizer_image_token` does, so prompts tokenise identically to LLaVA's.
With LION's tag soft prompt on (`tag_hint_token_id`, from the config), each `<tag_hint>` marker
becomes that one placeholder id, where the model writes its learnable hint vector.

Images: LLaVA-1.5's preprocessing through transformers' PIL image processor: with
`image_aspect_ratio="pad"` the picture is centred on a square of the CLIP mean colour (122, 116, 104)
(LLaVA-1.5 stage 2 and evaluation), with `"crop"` it is resized on its short side and centre-cropped
(LLaVA-1.5 stage 1). Every tower sees this one tensor; a tower that wants other normalisation
statistics converts it itself (see towers.py). To give one tower other pixels (a corruption of one
stream, preference/weakening.py `tower_pixels`), pass the model `{tower name: tensor}` instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from transformers import BatchFeature, ProcessorMixin

from ..constants import IMAGE_TOKEN, TAG_HINT_TOKEN
from .configuration import MofLlavaConfigError
from .tokenizer import check_tokenizer_files

AspectRatio = Literal["pad", "crop"]
ASPECT_RATIOS = ("pad", "crop")
# LLaVA-1.5's evaluation preprocessing; training runs pass their `DataConfig.image_aspect_ratio`.
DEFAULT_ASPECT_RATIO: AspectRatio = "pad"
# The markers `encode` replaces by placeholder ids; the rest of the text is tokenised chunk by chunk.
_MARKERS = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(TAG_HINT_TOKEN)})")


def _pil_backend(image_processor):
    """LLaVA resizes with PIL; the torchvision backend (picked where torchvision is installed) resizes
    slightly differently, so the same checkpoint would see different pixels on different machines."""
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    if image_processor is None or isinstance(image_processor, LlavaImageProcessorPil):
        return image_processor
    settings = {k: v for k, v in image_processor.to_dict().items() if k != "image_processor_type"}
    return LlavaImageProcessorPil(**settings)


@dataclass
class EncodedText:
    ids: list[int]
    # character span of `text` each id stands for; BOS is (0, 0), placeholders span their <image> marker
    offsets: list[tuple[int, int]]


class MofLlavaProcessor(ProcessorMixin):
    # Off unless the config has the tag soft prompt; set on the instance only then, so a processor
    # without it saves the same processor_config.json as before the option existed.
    tag_hint_token_id: int | None = None

    def __init__(
        self,
        image_processor,
        tokenizer,
        # Required (no keyword-only marker: transformers' loading passes only positional-or-keyword
        # arguments from processor_config.json).
        num_image_tokens: int,
        image_token_id: int,
        image_aspect_ratio: AspectRatio = DEFAULT_ASPECT_RATIO,
        chat_template: str | None = None,
        tag_hint_token_id: int | None = None,
        **kwargs,
    ):
        # Both come from the model's config (`for_config`): a default here could disagree with it.
        if isinstance(num_image_tokens, bool) or not isinstance(num_image_tokens, int) or num_image_tokens < 1:
            raise ValueError(
                f"num_image_tokens must be a positive integer (config.num_image_tokens), got {num_image_tokens!r}"
            )
        if isinstance(image_token_id, bool) or not isinstance(image_token_id, int):
            raise ValueError(f"image_token_id must be an integer (config.image_token_id), got {image_token_id!r}")
        if image_aspect_ratio not in ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, got {image_aspect_ratio!r}")
        self.num_image_tokens = int(num_image_tokens)
        self.image_token_id = int(image_token_id)
        self.image_aspect_ratio = image_aspect_ratio
        self.image_token = IMAGE_TOKEN
        if tag_hint_token_id is not None:
            if isinstance(tag_hint_token_id, bool) or not isinstance(tag_hint_token_id, int):
                raise ValueError(f"tag_hint_token_id must be an integer (config.tag_hint_token_id), got {tag_hint_token_id!r}")
            self.tag_hint_token_id = int(tag_hint_token_id)
        super().__init__(_pil_backend(image_processor), tokenizer, chat_template=chat_template)

    @classmethod
    def for_config(
        cls, config, tokenizer, image_aspect_ratio: AspectRatio = DEFAULT_ASPECT_RATIO
    ) -> MofLlavaProcessor:
        """The processor that matches a `MofLlavaConfig`: LLaVA-1.5's image preprocessing at the config's
        image size and statistics, and its visual token count and placeholder id."""
        from transformers.image_utils import PILImageResampling
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

        size = config.image_size
        image_processor = LlavaImageProcessorPil(
            size={"shortest_edge": size},
            crop_size={"height": size, "width": size},
            image_mean=list(config.image_mean),
            image_std=list(config.image_std),
            resample=PILImageResampling.BICUBIC,
            do_pad=True,
        )
        return cls(
            image_processor,
            tokenizer,
            num_image_tokens=config.num_image_tokens,
            image_token_id=config.image_token_id,
            image_aspect_ratio=image_aspect_ratio,
            tag_hint_token_id=getattr(config, "tag_hint_token_id", None),
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loading, refusing a folder without a tokenizer vocabulary first (transformers
        would build an empty tokenizer there; see tokenizer.py)."""
        check_tokenizer_files(pretrained_model_name_or_path, "processor")
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except TypeError as err:
            missing = [name for name in ("num_image_tokens", "image_token_id") if f"'{name}'" in str(err)]
            if not missing:
                raise
            raise MofLlavaConfigError(
                f"{pretrained_model_name_or_path}: processor_config.json lacks {' and '.join(missing)}; "
                "save the processor of this model's config (MofLlavaProcessor.for_config(config, tokenizer))"
            ) from None

    # -- text ------------------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool = True) -> EncodedText:
        """Token ids of `text` with every `<image>` expanded into placeholders (and `<tag_hint>` into the
        hint's one), and their character spans."""
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        bos = self.tokenizer.bos_token_id
        if add_bos and bos is not None:
            ids.append(bos)
            offsets.append((0, 0))
        pieces = _MARKERS.split(text)  # text, marker, text, marker, ..., text
        nonempty = [c for c in pieces[0::2] if c]
        # One batched tokenizer call for all chunks (each still tokenised on its own, as LLaVA does).
        encodings = iter(())
        if nonempty:
            batch = self.tokenizer(nonempty, add_special_tokens=False, return_offsets_mapping=True)
            encodings = zip(batch["input_ids"], batch["offset_mapping"])
        start = 0
        for i, piece in enumerate(pieces):
            if i % 2:
                placeholders = self._placeholders(piece)
                ids.extend(placeholders)
                offsets.extend([(start, start + len(piece))] * len(placeholders))
            elif piece:
                chunk_ids, chunk_offsets = next(encodings)
                ids.extend(chunk_ids)
                offsets.extend((start + a, start + b) for a, b in chunk_offsets)
            start += len(piece)
        return EncodedText(ids, offsets)

    def _placeholders(self, marker: str) -> list[int]:
        if marker == IMAGE_TOKEN:
            return [self.image_token_id] * self.num_image_tokens
        if self.tag_hint_token_id is None:
            raise ValueError(
                f"the text holds {TAG_HINT_TOKEN} (LION's tag prompt, data.tag_prompt) but this model has no "
                "tag soft prompt; build it with model.tag_soft_prompt: true"
            )
        return [self.tag_hint_token_id]

    # -- images ----------------------------------------------------------------------------------
    def preprocess_images(self, images: Sequence, image_aspect_ratio: AspectRatio | None = None) -> torch.Tensor:
        """PIL images (RGB) -> float tensor [n, 3, image_size, image_size]."""
        aspect = image_aspect_ratio or self.image_aspect_ratio
        if aspect not in ASPECT_RATIOS:
            raise ValueError(f"image_aspect_ratio must be one of {ASPECT_RATIOS}, got {aspect!r}")
        if len(images) == 0:
            raise ValueError("preprocess_images needs at least one image")
        out = self.image_processor(list(images), do_pad=(aspect == "pad"), return_tensors="pt")
        return out["pixel_values"]

    # -- both ------------------------------------------------------------------------------------
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images=None,
        padding: bool | str = True,
        padding_side: Literal["left", "right"] = "left",
        return_tensors: str = "pt",
        add_bos: bool = True,
        image_aspect_ratio: AspectRatio | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Prompts (with `<image>` markers) and their images, in order of appearance, -> model inputs.

        Left padding by default: that is what batched generation needs (right padding makes batched
        answers differ from one-by-one answers).
        """
        if kwargs:
            raise TypeError(f"unexpected arguments {sorted(kwargs)}")
        if text is None:
            raise ValueError("text is required: the prompts say where each image goes with <image>")
        if return_tensors != "pt":
            raise ValueError("only return_tensors='pt' is supported")
        texts = [text] if isinstance(text, str) else list(text)
        image_list = [] if images is None else ([images] if not isinstance(images, list | tuple) else list(images))
        n_markers = sum(t.count(IMAGE_TOKEN) for t in texts)
        if n_markers != len(image_list):
            raise ValueError(f"the prompts contain {n_markers} {IMAGE_TOKEN} markers but {len(image_list)} images were given")

        encoded = [self.encode(t, add_bos=add_bos).ids for t in texts]
        if len(encoded) > 1 and not padding and len({len(e) for e in encoded}) > 1:
            raise ValueError("prompts of different lengths need padding=True")
        data = self.pad(encoded, padding_side=padding_side)
        if image_list:
            data["pixel_values"] = self.preprocess_images(image_list, image_aspect_ratio)
        return BatchFeature(data=data)

    def pad(self, sequences: Sequence[Sequence[int]], padding_side: Literal["left", "right"] = "left") -> dict:
        """Pad id sequences into `input_ids` and `attention_mask` tensors."""
        pad_id = self.pad_token_id
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, seq in enumerate(sequences):
            span = slice(length - len(seq), length) if padding_side == "left" else slice(0, len(seq))
            input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, span] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's pad id, or its unk id when it has none (LLaVA-1.5 pads Vicuna with <unk>)."""
        tokenizer = self.tokenizer
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.unk_token_id
        if pad is None:
            raise ValueError("the tokenizer has neither a pad nor an unk token; set tokenizer.pad_token")
        return pad

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]
