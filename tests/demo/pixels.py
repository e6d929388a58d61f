"""What a picture of the synthetic dataset shows, read back from its pixels alone.

Independent of the generator's own bookkeeping: objects are the pixels close to one of the object
colours (the backgrounds are far from all of them), counted as connected blobs; orientation comes
from a blob's mirror symmetry and the end with the least ink (the tip); position is where the blob's
centroid falls in a 3 x 3 division of the picture.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from mof_llava.data.images import load_rgb_image
from mof_llava.scenes.drawing import SHAPE_COLOURS

NEAR = 50  # RGB distance to an object colour that counts as that colour (backgrounds are >= 98 away)
MIN_BLOB = 20  # pixels; smaller specks would be compression noise


@dataclass(frozen=True)
class Seen:
    colour: str
    count: int
    orientations: tuple[str, ...]  # per blob
    position: str  # of the first blob: left, right, top, bottom or centre


def look(path) -> Seen:
    pixels = np.asarray(load_rgb_image(path), dtype=np.float32)
    distances = {name: np.linalg.norm(pixels - np.array(rgb), axis=-1) for name, rgb in SHAPE_COLOURS.items()}
    colour = max(distances, key=lambda name: int((distances[name] < NEAR).sum()))
    blobs = [b for b in _blobs(distances[colour] < NEAR) if len(b[0]) >= MIN_BLOB]
    height, width = pixels.shape[:2]
    return Seen(colour, len(blobs), tuple(_pointing(b) for b in blobs), _position(blobs[0], width, height))


def _blobs(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """4-connected components as (rows, cols) arrays."""
    seen = np.zeros_like(mask, dtype=bool)
    height, width = mask.shape
    blobs = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        queue, members = deque([start]), []
        while queue:
            r, c = queue.popleft()
            members.append((r, c))
            for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                if 0 <= nr < height and 0 <= nc < width and mask[nr, nc] and not seen[nr, nc]:
                    seen[nr, nc] = True
                    queue.append((nr, nc))
        rows, cols = np.array(members).T
        blobs.append((rows, cols))
    return blobs


def _pointing(blob: tuple[np.ndarray, np.ndarray]) -> str:
    """Triangles and arrows are mirror-symmetric across the axis they point along: the pointing axis
    is the one whose mirror image differs least. Along it, the tip is the end whose outer band
    holds less ink."""
    rows, cols = blob
    rows, cols = rows - rows.min(), cols - cols.min()
    box = np.zeros((rows.max() + 1, cols.max() + 1), dtype=bool)
    box[rows, cols] = True
    changed_by_flipping_rows = np.count_nonzero(box != box[::-1])  # small for left/right
    changed_by_flipping_cols = np.count_nonzero(box != box[:, ::-1])  # small for up/down
    ink = box.sum(axis=1) if changed_by_flipping_cols < changed_by_flipping_rows else box.sum(axis=0)
    band = max(1, len(ink) // 5)
    tip_first = ink[:band].sum() < ink[-band:].sum()
    if changed_by_flipping_cols < changed_by_flipping_rows:
        return "up" if tip_first else "down"
    return "left" if tip_first else "right"


def _position(blob: tuple[np.ndarray, np.ndarray], width: int, height: int) -> str:
    rows, cols = blob
    x, y = cols.mean() / width, rows.mean() / height
    column = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "middle"
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    if column == "middle" and row == "middle":
        return "centre"
    if column != "middle" and row != "middle":
        return f"{row} {column}"  # a corner: never where the generator puts a single object
    return column if column != "middle" else row
