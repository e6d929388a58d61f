"""A small LLaVA-format dataset and run configs for training tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mof_llava.training.config import run_config_from_dict

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 220), "white": (250, 250, 250)}


def write_dataset(root: Path, n_images: int = 12, n_text: int = 4, missing_image: bool = False) -> dict[str, Path]:
    """Stage-1 (captions) and stage-2 (Q&A + text-only) files over generated images."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    captions, chats = [], []
    for i in range(n_images):
        colour = names[i % len(names)]
        Image.new("RGB", (40 + 3 * i, 30 + 2 * i), COLOURS[colour]).save(images / f"{i}.jpg")
        captions.append({"id": f"c{i}", "image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "Describe the image.\n<image>"}, {"from": "gpt", "value": f"a {colour} picture"}]})
        chats.append({"id": f"q{i}", "image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": colour},
            {"from": "human", "value": "Is it bright?"}, {"from": "gpt", "value": "Yes" if colour == "white" else "No"}]})
    for i in range(n_text):
        chats.append({"id": f"t{i}", "conversations": [
            {"from": "human", "value": f"What is {i} plus one?"}, {"from": "gpt", "value": str(i + 1)}]})
    if missing_image:
        chats.append({"id": "lost", "image": "does_not_exist.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "nothing"}]})
    (root / "pretrain.json").write_text(json.dumps(captions))
    (root / "finetune.json").write_text(json.dumps(chats))
    return {"images": images, "pretrain": root / "pretrain.json", "finetune": root / "finetune.json"}


def run_config(parts, data: dict[str, Path], output_dir: Path, stage: str = "pretrain", mixer: str = "interleave",
               **train_overrides):
    towers = [{"name": "clip", "path": str(parts.clip), "feature_layer": -2}]
    if mixer != "none":
        towers.append({"name": "dinov2", "path": str(parts.dinov2), "feature_layer": -1})
    train = {
        "stage": stage,
        "output_dir": str(output_dir),
        "global_batch_size": 4,
        "per_device_batch_size": 2,
        "learning_rate": 1e-3 if stage == "pretrain" else 1e-4,
        "max_steps": 6,
        "save_steps": 2,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "gradient_checkpointing": False,
        **train_overrides,
    }
    return run_config_from_dict({
        "name": output_dir.name,
        "model": {"llm": str(parts.llm), "towers": towers, "mixer": {"mode": mixer}},
        "data": {"data_path": str(data[stage]), "image_folder": str(data["images"])},
        "train": train,
    })


def losses(output_dir: Path) -> dict[int, float]:
    """step -> training loss from metrics.jsonl (the last value logged for a step wins)."""
    out = {}
    for line in (output_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            out[row["step"]] = row["loss"]
    return out
