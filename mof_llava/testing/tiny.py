"""Tiny random components for tests and the demo: a Llama-style tokenizer trained offline, and
tiny Llama, CLIP-vision and DINOv2 models.

Everything is saved to a directory and loaded back through the same `from_pretrained` calls real
checkpoints go through, so tests exercise the real loading path. Nothing here touches the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Words the tokenizer learns merges for: the conversation templates, benchmark prompts and the
# demo's captions. Anything else still encodes, through byte fallback, like a real Llama tokenizer.
_CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "USER: ASSISTANT: Human: Assistant: ###",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "Is there a dog in the image? Yes No yes no (a) (b) A. B. C. D.",
    "What is the colour of the shape? How many circles are there? red green blue yellow white black",
    "a photo of a red circle, a green square, a blue triangle, two, three, four, left, right, up, down",
    "Describe the image briefly. The image shows",
]

LLAMA_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]


def build_tiny_tokenizer(vocab_size: int = 512, with_image_token: bool = True, corpus: Sequence[str] = ()):
    """A tokenizer that behaves like Llama/Vicuna's: SentencePiece-style BPE with a `▁` word prefix
    added once at the start of each call, byte fallback, ids 0/1/2 = <unk>/<s>/</s>, ids 3..258 =
    the 256 byte tokens, BOS added by default. Optionally `<image>` as an added special token at the
    end of the vocabulary (the llava-hf convention). `corpus`: more text to learn merges on (a
    model's own training text, so that its frequent words are whole tokens, as in Llama's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    # 1. Learn merges on the corpus.
    probe = Tokenizer(models.BPE(unk_token="<unk>"))
    probe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    n_learned = vocab_size - len(LLAMA_SPECIAL_TOKENS) - 256
    trainer = trainers.BpeTrainer(vocab_size=n_learned, show_progress=False)
    probe.train_from_iterator(_CORPUS * 4 + list(corpus), trainer)
    learned = sorted(probe.get_vocab().items(), key=lambda kv: kv[1])
    merges = [tuple(m.split(" ")) for m in _bpe_merges(probe)]

    # 2. Lay out the vocabulary like Llama's.
    vocab = {tok: i for i, tok in enumerate(LLAMA_SPECIAL_TOKENS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for tok, _ in learned:
        if tok not in vocab:
            vocab[tok] = len(vocab)

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer = LlamaTokenizer(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
    )
    if with_image_token:
        tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def _bpe_merges(tokenizer) -> list[str]:
    import json

    model = json.loads(tokenizer.to_str())["model"]
    return [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]


def tiny_llama_config(vocab_size: int, hidden_size: int = 64, num_layers: int = 2):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=None,
        tie_word_embeddings=False,
    )


def tiny_clip_vision_config(image_size: int = 56, hidden_size: int = 32, num_layers: int = 3):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=image_size,
        patch_size=14,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        projection_dim=hidden_size,
    )


def tiny_dinov2_config(image_size: int = 56, hidden_size: int = 32, num_layers: int = 3):
    from transformers import Dinov2Config

    return Dinov2Config(
        image_size=image_size,
        patch_size=14,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        mlp_ratio=2,
    )


@dataclass(frozen=True)
class TinyCheckpoints:
    """Directories written by `save_tiny_checkpoints`, laid out like real hub checkpoints."""

    root: Path
    llm: Path  # LlamaForCausalLM + tokenizer (like lmsys/vicuna-7b-v1.5)
    clip: Path  # CLIPVisionModel + preprocessor_config.json (like openai/clip-vit-large-patch14-336)
    dinov2: Path  # Dinov2Model + preprocessor_config.json (like facebook/dinov2-large)
    image_size: int


def save_tiny_checkpoints(
    root: str | Path,
    *,
    image_size: int = 56,
    llm_hidden_size: int = 64,
    clip_hidden_size: int = 32,
    dinov2_hidden_size: int = 32,
    seed: int = 0,
    vocab_size: int = 512,
    tokenizer_corpus: Sequence[str] = (),
) -> TinyCheckpoints:
    """Build tiny random LLM / CLIP / DINOv2 checkpoints (and the tokenizer, see
    `build_tiny_tokenizer`) under `root`."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionModel,
        Dinov2Model,
        LlamaForCausalLM,
    )
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    root = Path(root)
    paths = TinyCheckpoints(root, root / "llm", root / "clip", root / "dinov2", image_size)
    torch.manual_seed(seed)

    tokenizer = build_tiny_tokenizer(vocab_size, corpus=tokenizer_corpus)
    # The LLM's vocabulary holds every tokenizer id, <image> included (unused rows are harmless).
    llm = LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden_size=llm_hidden_size))
    llm.save_pretrained(paths.llm)
    tokenizer.save_pretrained(paths.llm)

    CLIPVisionModel(tiny_clip_vision_config(image_size, clip_hidden_size)).save_pretrained(paths.clip)
    CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(paths.clip)

    Dinov2Model(tiny_dinov2_config(image_size, dinov2_hidden_size)).save_pretrained(paths.dinov2)
    CLIPImageProcessorPil(  # DINOv2's own preprocessing: ImageNet statistics
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    ).save_pretrained(paths.dinov2)
    return paths


def save_tiny_mof_llava(
    directory: str | Path,
    mixer: str = "interleave",
    alpha: float = 0.0,
    image_size: int = 56,
    seed: int = 0,
    moa: bool = False,
    tag_soft_prompt: bool = False,
) -> Path:
    """A complete tiny MoF-LLaVA model + processor saved under `directory`/model, built from tiny
    component checkpoints (under `directory`/components) exactly as a real run builds its model.
    `mixer` is "none" (LLaVA-1.5 baseline), "additive" (A-MoF with `alpha`), "interleave" (I-MoF)
    or "concat"; `moa` and `tag_soft_prompt` add LION's mixture of adapters (default tasks) and tag
    soft prompt."""
    import torch

    from ..model import MixerSpec, build_model, llava15_recipe, mof_recipe

    directory = Path(directory)
    parts = save_tiny_checkpoints(directory / "components", image_size=image_size, seed=seed)
    if mixer == "none":
        recipe = llava15_recipe(str(parts.llm), str(parts.clip))
    elif mixer in ("additive", "interleave"):
        recipe = mof_recipe(str(parts.llm), str(parts.clip), str(parts.dinov2), mode=mixer, alpha=alpha)
    else:
        recipe = mof_recipe(str(parts.llm), str(parts.clip), str(parts.dinov2), mode="interleave")
        recipe.mixer = MixerSpec(mode=mixer)
    if moa:
        from ..model.configuration import MoaSpec

        recipe.moa = MoaSpec()
    recipe.tag_soft_prompt = tag_soft_prompt
    torch.manual_seed(seed)
    model, processor = build_model(recipe)
    out = directory / "model"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
