"""Packing changes no update: for a mixed image/text batch, the packed loss and gradients equal the
padded ones (baseline, A-MoF, I-MoF, LoRA), per sample and under gradient accumulation; and a short
training run gives the same step losses and weights packed as unpacked."""

import json

import numpy as np
import pytest
import torch

from mof_llava.constants import IGNORE_INDEX
from mof_llava.data.collator import LlavaCollator, PackedCollator
from mof_llava.data.packing import packed_epoch
from mof_llava.model import MofLlavaForConditionalGeneration
from mof_llava.model.configuration import MofLlavaConfig, TowerSpec
from mof_llava.testing.tiny import tiny_clip_vision_config, tiny_dinov2_config, tiny_llama_config
from mof_llava.training.config import LoraConfig
from mof_llava.training.stages import apply_stage

torch.set_num_threads(1)

IMAGE_TOKEN = 512
MIXERS = {
    "baseline": ([("clip", "clip")], {}),
    "A-MoF": ([("clip", "clip"), ("dinov2", "dinov2")], {"mode": "additive", "alpha": 0.5}),
    "I-MoF": ([("clip", "clip"), ("dinov2", "dinov2")], {"mode": "interleave"}),
}


def _model(kind: str, lora: bool = False):
    towers, mixer = MIXERS[kind]
    specs = []
    for name, family in towers:
        config = tiny_clip_vision_config(56, 32) if family == "clip" else tiny_dinov2_config(56, 32)
        specs.append(TowerSpec(name, config.to_dict(), feature_layer=-2 if family == "clip" else -1))
    config = MofLlavaConfig(
        text_config=tiny_llama_config(520).to_dict(), vision_towers=specs, mixer=mixer, image_size=56,
        image_token_id=IMAGE_TOKEN,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = MofLlavaForConditionalGeneration(config)
    model = apply_stage(model, "finetune", LoraConfig(r=4, alpha=8, dropout=0.0) if lora else None)
    if lora:  # peft starts LoRA's B at zero; move it so the LoRA path takes part in the comparison
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.05)
    return model.train()


def _samples(num_image_tokens: int, seed: int = 0, n: int = 6) -> list[dict]:
    """Alternating image and text-only samples of different lengths, their prompts unsupervised."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        prompt, answer = int(rng.integers(3, 9)), int(rng.integers(2, 12))
        image = i % 2 == 0
        ids = [1] + ([IMAGE_TOKEN] * num_image_tokens if image else []) + rng.integers(3, 500, prompt + answer).tolist()
        labels = [IGNORE_INDEX] * (len(ids) - answer) + ids[-answer:]
        if i == 1:  # a supervised first label: unpacked it is never predicted, packed it must not be
            labels[0] = ids[0]
        items.append({
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "pixel_values": torch.from_numpy(rng.standard_normal((3, 56, 56)).astype(np.float32)) if image else None,
            "record": f"sample {i}",
        })
    return items


def _model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("skipped", "sample_records")}


def _loss_and_grads(model, batches: list[dict], num_items: int | None = None):
    model.zero_grad()
    total = 0.0
    for batch in batches:
        kwargs = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
        loss = model(**_model_inputs(batch), **kwargs).loss
        loss.backward()
        total += loss.item()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return total, grads


def _assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    for name in grads_a:
        scale = grads_a[name].abs().max().clamp_min(1e-12)
        assert ((grads_a[name] - grads_b[name]).abs().max() / scale) < 1e-5, name


@pytest.mark.parametrize("kind,lora", [("baseline", False), ("A-MoF", False), ("I-MoF", False), ("I-MoF", True)])
def test_packed_loss_and_gradients_equal_padded(kind, lora):
    model = _model(kind, lora)
    items = _samples(model.config.num_image_tokens)
    padded = _loss_and_grads(model, [LlavaCollator(0)(items)])
    packed = _loss_and_grads(model, [PackedCollator(0)(items)])
    _assert_same(padded, packed)
    if lora:
        assert any("lora_B" in name and g.abs().sum() > 0 for name, g in packed[1].items())


def test_packed_per_sample_losses_equal_running_each_sample_alone():
    model = _model("I-MoF").eval()
    items = _samples(model.config.num_image_tokens, seed=1)
    with torch.no_grad():
        logits = model(**_model_inputs(PackedCollator(0)(items))).logits[0]
        start = 0
        for item in items:
            n = len(item["input_ids"])
            alone = model(**_model_inputs(LlavaCollator(0)([item]))).logits[0]
            torch.testing.assert_close(logits[start : start + n], alone, rtol=1e-5, atol=1e-5)
            start += n


def test_accumulated_packed_micro_batches_give_the_global_per_token_mean():
    """Under accumulation the Trainer passes num_items_in_batch (supervised tokens of the whole step,
    counted over labels[..., 1:]): the step's gradient is then the same whichever way the samples are
    split into micro-batches, padded in pairs or packed by the packed sampler."""
    model = _model("A-MoF")
    items = _samples(model.config.num_image_tokens, seed=2, n=8)
    lengths = np.array([len(item["input_ids"]) for item in items])
    has_image = np.array([item["pixel_values"] is not None for item in items])
    padded = [LlavaCollator(0)(items[i : i + 2]) for i in range(0, 8, 2)]
    deal = packed_epoch(lengths, has_image, world_size=1, grad_accum=3, per_device_batch_size=3, seed=0, epoch=0,
                        group_by_modality_length=False)
    assert len(deal) == 3 and sorted(np.concatenate(deal).tolist()) == list(range(8))
    packed = [PackedCollator(0)([items[i] for i in micro]) for micro in deal]
    count = lambda batches: sum(int((b["labels"][..., 1:] != IGNORE_INDEX).sum()) for b in batches)  # noqa: E731
    assert count(padded) == count(packed) == sum(int((item["labels"][1:] != IGNORE_INDEX).sum()) for item in items)
    _assert_same(_loss_and_grads(model, padded, count(padded)), _loss_and_grads(model, packed, count(packed)))


def test_a_packed_run_trains_like_an_unpacked_one(tiny_parts, toy_data, tmp_path):
    """The full Trainer, stage 2 on mixed image/text data: with the recipe's samples per step the
    packed run reads the same samples each step, so its step losses and trained weights are the
    unpacked run's (fp32, one process, 2 accumulation steps)."""
    from safetensors.torch import load_file
    from toydata import run_config

    from mof_llava.training.run import train

    results = {}
    for packing in (False, True):
        config = run_config(tiny_parts, toy_data, tmp_path / f"packing_{packing}", stage="finetune",
                            max_steps=3, save_steps=100, logging_steps=1)
        config.data = type(config.data)(**{**config.data.__dict__, "packing": packing})
        result = train(config)
        assert (result.trainer._packed_sampler is not None) == packing  # the run did pack
        lines = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
        losses = [line["loss"] for line in lines if "loss" in line]
        weights = load_file(str(next(result.output_dir.rglob("*.safetensors"))))
        results[packing] = (losses, weights)
    (losses_u, weights_u), (losses_p, weights_p) = results[False], results[True]
    assert len(losses_u) == 3 and losses_p == pytest.approx(losses_u, rel=1e-5)
    assert weights_u.keys() == weights_p.keys()
    for name in weights_u:
        torch.testing.assert_close(weights_p[name], weights_u[name], rtol=1e-5, atol=1e-6)
