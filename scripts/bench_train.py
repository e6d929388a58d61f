"""Training-step throughput of a real-size random-weight MoF-LLaVA: tokens/s, MFU and peak memory.

    .venv/bin/python scripts/bench_train.py --llm 7b --towers large --mixer interleave --stage pretrain --micro-batch 16
    .venv/bin/python scripts/bench_train.py --llm 7b --llm-layers 16 --stage finetune --micro-batch 8

The model is built from component configs (no weights to download): Vicuna-7B/13B-shaped Llama,
CLIP ViT-L/14-336 and DINOv2 ViT-L/14 (`--towers large`), or the test kit's tiny parts (`--llm tiny
--towers tiny`, which runs anywhere and is what the tests use). Each step is what a training step
does: towers forward without autograd, mixer, placeholders, LLM forward and backward, AdamW step,
with the stage's freezing (`mof_llava.training.stages.apply_stage`) and the training precision of
`mof-llava train` on a GPU (fp32 trainable weights with bf16 autocast, frozen towers in bf16; fp32
on CPU). Every sample holds one image and `--text-tokens` text tokens (about 180 in the 665K mix),
so a sequence is `num_image_tokens + text_tokens` long.

`--text-tokens-min M` spreads the samples' text lengths evenly from M to `--text-tokens`; padded
batches then carry padding up to the longest sample. `--packing` lays the micro-batch's samples back
to back in one row instead (`mof_llava.data.collator.PackedCollator`: no padding, positions
restarting per sample, attention isolated per sample), as `data.packing: true` trains. Tokens/s and
MFU count real tokens only, so the two are comparable.

MFU uses the same model-FLOPs count as the training log (`mof_llava.training.throughput`). Full
fine-tuning of a 7B model with AdamW needs ~16 bytes per parameter, more than one 80 GB GPU holds:
`--llm-layers` keeps the first N decoder layers so one GPU can measure a stage-2 step (time per
layer is what scales to the full depth).

Prints one JSON object (and appends it to `--json` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mof_llava.model import MixerSpec, MofLlavaConfig, MofLlavaForConditionalGeneration, TowerSpec  # noqa: E402
from mof_llava.model.configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # noqa: E402
from mof_llava.model.presets import CLIP_L14_336, DINOV2_L14  # noqa: E402
from mof_llava.training.run import enable_activation_checkpointing  # noqa: E402
from mof_llava.training.stages import apply_stage, trainable_by_module  # noqa: E402
from mof_llava.training.throughput import FlopsModel, device_peak_flops  # noqa: E402

# Vicuna-v1.5 shapes (Llama-2 architecture, 32K vocabulary).
LLM_SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
    "13b": dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
}


def llm_config(size: str, layers: int | None):
    from transformers import LlamaConfig

    from mof_llava.testing.tiny import tiny_llama_config

    if size == "tiny":
        config = tiny_llama_config(vocab_size=512)
    else:
        config = LlamaConfig(vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, **LLM_SHAPES[size])
    if layers is not None:
        if not 1 <= layers <= config.num_hidden_layers:
            raise SystemExit(f"--llm-layers must be in 1..{config.num_hidden_layers} for --llm {size}")
        config.num_hidden_layers = layers
    return config


def tower_specs(size: str) -> tuple[list[TowerSpec], int]:
    """[CLIP, DINOv2] specs as the paper uses them (the presets' layers), and the image side."""
    from mof_llava.testing.tiny import tiny_clip_vision_config, tiny_dinov2_config

    if size != "tiny":
        # DINOv2-L/14 as released (518 px position table, interpolated to the 24 x 24 grid at 336 px).
        return [CLIP_L14_336.spec(), DINOV2_L14.spec()], CLIP_L14_336.architecture["image_size"]
    image_size = 56
    specs = [
        TowerSpec("clip", tiny_clip_vision_config(image_size).to_dict(), feature_layer=CLIP_L14_336.feature_layer),
        TowerSpec("dinov2", tiny_dinov2_config(image_size).to_dict(), feature_layer=DINOV2_L14.feature_layer),
    ]
    return specs, image_size


def build(args) -> MofLlavaForConditionalGeneration:
    towers, image_size = tower_specs(args.towers)
    if args.mixer == "none":
        towers = towers[:1]
    config = MofLlavaConfig(
        text_config=llm_config(args.llm, args.llm_layers),
        vision_towers=[t.to_dict() for t in towers],
        mixer=MixerSpec(mode=args.mixer, alpha=args.alpha if args.mixer == "additive" else 0.0).to_dict(),
        image_size=image_size,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )
    config._attn_implementation = args.attn
    config.text_config._attn_implementation = args.attn
    torch.manual_seed(0)
    with torch.device(args.device):
        model = MofLlavaForConditionalGeneration(config)
    if args.precision == "bf16":  # as `mof-llava train`: frozen towers need no fp32 copy
        model.vision_towers.to(torch.bfloat16)
    if args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model


def make_samples(model, args) -> list[dict[str, torch.Tensor]]:
    """`--micro-batch` samples of one image each, text lengths from `--text-tokens-min` to `--text-tokens`."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    shortest = args.text_tokens if args.text_tokens_min is None else args.text_tokens_min
    samples = []
    for n_text in torch.linspace(shortest, args.text_tokens, args.micro_batch).round().long().tolist():
        text = torch.randint(3, config.text_config.vocab_size, (n_text,), generator=generator)
        head = min(16, n_text)  # the image after a short system prompt, as in LLaVA's templates
        placeholders = torch.full((config.num_image_tokens,), config.image_token_id, dtype=torch.long)
        input_ids = torch.cat([text[:head], placeholders, text[head:]])
        labels = input_ids.clone()
        answer = max(1, (n_text - head) // 2)  # the last half of the text is the supervised answer
        labels[: len(input_ids) - answer] = -100
        pixels = torch.randn(3, config.image_size, config.image_size, generator=generator)
        samples.append({"input_ids": input_ids, "labels": labels, "pixel_values": pixels})
    return samples


def make_batch(model, args) -> dict[str, torch.Tensor]:
    from mof_llava.data.collator import LlavaCollator, PackedCollator

    samples = make_samples(model, args)
    batch = (PackedCollator if args.packing else LlavaCollator)(pad_token_id=0)(samples)
    del batch["skipped"], batch["sample_records"]
    pixels_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    return {
        key: value.to(args.device, pixels_dtype) if key == "pixel_values" else
        value.to(args.device) if torch.is_tensor(value) else value
        for key, value in batch.items()
    }


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_steps(model, optimizer, batch, autocast, args) -> tuple[list[float], list[float]]:
    """Wall time and loss of each training step after the warm-up ones (the device synchronised)."""
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        synchronize(args.device)
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(args.device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
            losses.append(loss.item())
    return times, losses


def run(args) -> dict:
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    model = build(args)
    model.train()
    model = apply_stage(model, args.stage)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, fused=args.device.startswith("cuda"))
    batch = make_batch(model, args)
    autocast = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()
    )
    flops = FlopsModel.for_model(model)
    mask = batch.get("attention_mask")
    tokens = int(mask.sum()) if mask is not None else batch["input_ids"].numel()  # real tokens only
    step_flops = flops.step_flops(tokens, args.micro_batch)

    times, losses = time_steps(model, optimizer, batch, autocast, args)
    step_s = statistics.median(times)
    peak = device_peak_flops(args.peak_tflops)
    result = {
        "script": "bench_train",
        "llm": args.llm,
        "llm_layers": model.config.text_config.num_hidden_layers,
        "towers": args.towers,
        "mixer": args.mixer,
        "stage": args.stage,
        "precision": args.precision,
        "attn": args.attn,
        "gradient_checkpointing": args.gradient_checkpointing,
        "micro_batch": args.micro_batch,
        "packing": args.packing,
        "sequence_length": batch["input_ids"].shape[1],
        "real_tokens": tokens,
        "padded_tokens": batch["input_ids"].numel(),
        "visual_tokens": model.config.num_image_tokens,
        "trainable_params": {name: count.trainable for name, count in trainable_by_module(model).items()},
        "step_s_median": round(step_s, 4),
        "step_s_min": round(min(times), 4),
        "tokens_per_s": round(tokens / step_s, 1),
        "samples_per_s": round(args.micro_batch / step_s, 2),
        "model_tflops_per_step": float(f"{step_flops / 1e12:.4g}"),
        "achieved_tflops": float(f"{step_flops / step_s / 1e12:.4g}"),
        "mfu": round(step_flops / step_s / peak, 4) if peak else None,
        "losses": [round(v, 4) for v in losses],
        "machine": machine(args.device),
    }
    if args.device.startswith("cuda"):
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def machine(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", choices=["tiny", "7b", "13b"], default="7b")
    parser.add_argument("--llm-layers", type=int, default=None, help="keep only the first N decoder layers")
    parser.add_argument("--towers", choices=["tiny", "large"], default="large")
    parser.add_argument("--mixer", choices=["none", "additive", "interleave"], default="interleave")
    parser.add_argument("--alpha", type=float, default=0.5, help="DINOv2 ratio for --mixer additive")
    parser.add_argument("--stage", choices=["pretrain", "finetune"], default="pretrain")
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--text-tokens", type=int, default=180)
    parser.add_argument("--text-tokens-min", type=int, default=None, help="spread text lengths from this up")
    parser.add_argument("--packing", action="store_true", help="one packed row per micro-batch (data.packing)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--attn", choices=["sdpa", "flash_attention_2", "eager"], default="sdpa")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU when not a known GPU")
    parser.add_argument("--json", type=Path, default=None, help="append the result to this JSON-lines file")
    args = parser.parse_args(argv)
    args.precision = "bf16" if args.device.startswith("cuda") else "fp32"
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    line = json.dumps(result)
    print(line)
    if args.json is not None:
        with args.json.open("a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
