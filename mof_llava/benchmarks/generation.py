"""Batched greedy answers from a mof-llava checkpoint (left padding, new tokens only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .runner import GenerateFn


def pick_device(device: str = "auto", local_rank: int = 0) -> str:
    import torch

    if device != "auto":
        return device
    return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16") from None


def load_model(model_dir: str | Path, device: str = "cpu", dtype: str = "auto"):
    """(model, processor) from a saved mof-llava folder, ready for generation."""
    from .. import MofLlavaForConditionalGeneration, MofLlavaProcessor

    processor = MofLlavaProcessor.from_pretrained(model_dir)
    torch_dtype = pick_dtype(dtype, device)
    model = MofLlavaForConditionalGeneration.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    return model, processor


def make_generate_fn(
    model, processor, max_new_tokens: int, image_aspect_ratio: str = "pad", moa_task: str | None = None
) -> GenerateFn:
    """A function answering a batch of (image, prompt) pairs with greedy decoding; prompts are
    left-padded (generation appends on the right); answers are the decoded new tokens without
    special tokens, stripped (as LLaVA's scripts post-process them). `moa_task` routes every row
    through that task's adapters of LION's mixture (None: no task ids, for a model without MoA)."""
    import torch

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    task_id = None if moa_task is None else model.config.moa_spec.tasks.index(moa_task)

    def generate(images: list[Any], prompts: list[str]) -> list[str]:
        inputs = processor(
            text=prompts,
            images=images,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            image_aspect_ratio=image_aspect_ratio,
        )
        inputs = {
            k: (v.to(device=device, dtype=dtype) if torch.is_floating_point(v) else v.to(device))
            for k, v in inputs.items()
        }
        if task_id is not None:
            inputs["task_ids"] = torch.full((len(prompts),), task_id, dtype=torch.long, device=device)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]

    return generate


def model_info(model_dir: str | Path, device: str, dtype: str) -> dict[str, Any]:
    """What the metrics record about the model: its saved config, device and dtype."""
    import json

    config_path = Path(model_dir) / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else None
    return {"model_config": config, "device": device, "dtype": dtype}
