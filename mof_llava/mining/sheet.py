"""`mine sheet`: a contact sheet of the top pairs, for a person to review.

Each cell shows the two images of a pair side by side, `#k` (the k-th pair of the CSV, on line
k + 1 after the header), its CLIP and DINOv2 cosines and both image ids. A reviewer
deletes the rejected lines from the CSV and exports the rest with `mine export-mmvp`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mof_llava.atomic import atomic_path
from mof_llava.mining.errors import MiningError
from mof_llava.mining.pairs import read_pairs_csv, summary_path

BACKGROUND = (255, 255, 255)
TILE_BACKGROUND = (236, 236, 236)
TEXT = (20, 20, 20)
ERROR = (170, 20, 20)


@dataclass
class SheetResult:
    output: Path
    pairs: int
    unreadable: list[str] = field(default_factory=list)  # "id: reason"

    def describe(self) -> str:
        text = f"{self.pairs} pairs drawn to {self.output}"
        if self.unreadable:
            text += f"; {len(self.unreadable)} image(s) could not be read and are shown as placeholders:\n  "
            text += "\n  ".join(self.unreadable)
        return text


def image_root_for(pairs_csv: str | Path, override: str | None) -> Path:
    """Where relative ids resolve: the option, else the pairs summary's image_root, else the cwd."""
    if override:
        return Path(override)
    summary = summary_path(pairs_csv)
    if summary.exists():
        root = json.loads(summary.read_text(encoding="utf-8")).get("image_root")
        if root:
            return Path(root)
    return Path.cwd()


def draw_contact_sheet(
    pairs_csv: str | Path,
    output: str | Path,
    image_root: str | Path,
    top: int = 50,
    columns: int = 2,
    thumb: int = 224,
) -> SheetResult:
    from PIL import Image, ImageDraw, ImageFont

    if top < 1 or columns < 1 or thumb < 16:
        raise MiningError("top and columns must be >= 1 and thumb >= 16")
    frame = read_pairs_csv(pairs_csv).head(top)
    if frame.empty:
        raise MiningError(f"{pairs_csv}: no pairs to draw")
    font = ImageFont.load_default(size=max(10, thumb // 16))
    line = font.size + 4
    pad = 8
    cell_w, cell_h = 2 * thumb + 3 * pad, thumb + 2 * pad + 3 * line
    rows = (len(frame) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    result = SheetResult(Path(output), len(frame))
    for k, pair in enumerate(frame.itertuples(index=False)):
        x0, y0 = (k % columns) * cell_w, (k // columns) * cell_h
        for side, image_id in enumerate((pair.image_a, pair.image_b)):
            tile, problem = _thumbnail(Path(image_root), image_id, thumb)
            if problem:
                result.unreadable.append(f"{image_id}: {problem}")
                ImageDraw.Draw(tile).text((6, 6), "unreadable", fill=ERROR, font=font)
            sheet.paste(tile, (x0 + pad + side * (thumb + pad), y0 + pad))
        text_y = y0 + pad + thumb + 4
        draw.text(
            (x0 + pad, text_y),
            f"#{k + 1}  CLIP = {pair.clip_cos:.4f}  DINOv2 = {pair.dino_cos:.4f}",
            fill=TEXT,
            font=font,
        )
        for side, image_id in enumerate((pair.image_a, pair.image_b)):
            label = _fit(draw, str(image_id), font, thumb)
            draw.text((x0 + pad + side * (thumb + pad), text_y + line), label, fill=TEXT, font=font)
    with atomic_path(output) as tmp, open(tmp, "wb") as f:
        sheet.save(f, format="PNG")
    return result


def _thumbnail(root: Path, image_id: str, size: int):
    """(size x size tile with the image fitted and centred, problem text or None)."""
    from PIL import Image, ImageOps

    from mof_llava.data.images import ImageLoadError, load_rgb_image

    tile = Image.new("RGB", (size, size), TILE_BACKGROUND)
    try:
        image = load_rgb_image(root / image_id, loading="viewer")
    except ImageLoadError as err:
        return tile, err.reason
    image = ImageOps.contain(image, (size, size))
    tile.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return tile, None


def _fit(draw, text: str, font, width: int) -> str:
    """`text`, shortened from the left with an ellipsis until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]
    return "…" + text
