"""A small flat preference file over generated images, for the preference-stage tests."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 40), "blue": (20, 40, 220), "white": (250, 250, 250)}


def write_pairs(root: Path, n: int = 8) -> dict[str, Path]:
    """`n` pairs: the picture's colour chosen, another colour rejected (as an injected error would be)."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    lines = []
    for i in range(n):
        colour, wrong = names[i % 4], names[(i + 1 + i // 4) % 4]
        Image.new("RGB", (40 + 3 * i, 30 + 2 * i), COLOURS[colour]).save(images / f"{i}.png")
        lines.append({"id": f"p{i}", "image": f"{i}.png", "prompt": "<image>\nWhat colour is the picture?",
                      "chosen": f"The picture is {colour}.", "rejected": f"The picture is {wrong} and round.",
                      "neg_type": "llm-hal", "source": "toy"})  # fmt: skip
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return {"images": images, "pairs": path}
