"""Helpers for the mining tests: generated pictures, image folders, an in-memory row source."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def picture(seed: int, size: tuple[int, int] = (64, 48)):
    """A generated RGB picture: a few coloured rectangles on a background, different per seed."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, size[0] - 8)), int(rng.integers(0, size[1] - 8))
        x1, y1 = x0 + int(rng.integers(4, size[0] - x0)), y0 + int(rng.integers(4, size[1] - y0))
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def write_image_folder(root: Path, count: int, corrupt: tuple[str, ...] = ()) -> list[str]:
    """`count` PNG/JPEG pictures (some in a subfolder) plus unreadable files named in `corrupt`.
    Returns the readable ids (paths relative to root) in sorted order."""
    ids = []
    for i in range(count):
        rel = f"sub/img{i:03d}.jpg" if i % 4 == 0 else f"img{i:03d}.png"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        picture(i).save(path)
        ids.append(rel)
    for rel in corrupt:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    return sorted(ids)


class ArrayRows:
    """An in-memory matrix with the source interface (rows, dim, read, take)."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.rows, self.dim = x.shape

    def read(self, start, stop):
        return self.x[start:stop]

    def take(self, rows):
        return self.x[rows]
