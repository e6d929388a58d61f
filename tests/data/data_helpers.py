"""Builders for LLaVA-format records, data files and images used by the data tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from mof_llava.data.records import RecordLocation

WHERE = RecordLocation("t.json", 0, 1)  # where the records that tests parse say they come from
THREE_ROUNDS = [
    ("What colour is the shape?", "red"),
    ("How many circles are there?", "two"),
    ("Left or right?", "left"),
]


def turn(role: str, value: str) -> dict:
    return {"from": role, "value": value}


def image_record(record_id: str, image: str, *rounds: tuple[str, str], marker: str = "<image>\n") -> dict:
    """A record whose first question carries the image marker (prefix by default)."""
    conversations = []
    for r, (question, answer) in enumerate(rounds):
        conversations += [turn("human", (marker if r == 0 else "") + question), turn("gpt", answer)]
    return {"id": record_id, "image": image, "conversations": conversations}


def text_record(record_id: str, *rounds: tuple[str, str]) -> dict:
    conversations = []
    for question, answer in rounds:
        conversations += [turn("human", question), turn("gpt", answer)]
    return {"id": record_id, "conversations": conversations}


def write_json(path: Path, records: list, indent: int | None = 2) -> Path:
    path.write_text(json.dumps(records, indent=indent, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_image(path: Path, size=(64, 48), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path
