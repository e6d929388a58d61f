"""`mine export-mmvp`: the first K pairs of a pairs CSV as a benchmark folder in MMVP's format.

    <output>/MMVP Images/1.jpg, 2.jpg, ...   pair k is images 2k-1 (image_a) and 2k (image_b)
    <output>/Questions.csv                   Index,Question,Options,Correct Answer
    <output>/sources.csv                     where each numbered image came from

Questions.csv is a skeleton: Index is filled (1..2K), the other columns are left for a person to
write. MMVP's convention for a pair is the same question and options on both rows with opposite
answers, e.g. `Is the butterfly's wing open or closed?`, `(a) Open (b) Closed`, `(a)` / `(b)`.
Once filled in, the folder loads like the original MMVP benchmark. The folder is built under a
temporary name and renamed when complete; an existing folder is never overwritten.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mof_llava.mining.errors import MiningError
from mof_llava.mining.pairs import read_pairs_csv

IMAGES_DIR = "MMVP Images"
QUESTIONS = "Questions.csv"
SOURCES = "sources.csv"
QUESTION_HEADER = ["Index", "Question", "Options", "Correct Answer"]
# Pillow's useful JPEG qualities: above 95 its docs advise against (files grow, little is gained).
QUALITY_MIN, QUALITY_MAX = 1, 95


@dataclass
class ExportResult:
    output: Path
    pairs: int
    requested: int

    def describe(self) -> str:
        text = f"{self.pairs} pairs ({2 * self.pairs} images) exported to {self.output}"
        if self.pairs < self.requested:
            text += f" (the CSV holds only {self.pairs} of the {self.requested} requested)"
        return (
            text + f"; fill in the Question, Options and Correct Answer columns of {self.output / QUESTIONS}"
        )


def export_mmvp(
    pairs_csv: str | Path, output: str | Path, image_root: str | Path, top: int = 150, quality: int = 95
) -> ExportResult:
    from mof_llava.data.images import ImageLoadError, load_rgb_image

    if top < 1:
        raise MiningError(f"top must be >= 1, got {top}")
    if not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise MiningError(f"JPEG quality must be in {QUALITY_MIN}..{QUALITY_MAX}, got {quality}")
    output = _benchmark_folder(output)
    if output.exists() and any(output.iterdir()):
        raise MiningError(f"{output}: already exists and is not empty; choose a new folder")
    frame = read_pairs_csv(pairs_csv).head(top)
    if frame.empty:
        raise MiningError(f"{pairs_csv}: no pairs to export")

    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / IMAGES_DIR).mkdir(parents=True)
    try:
        sources = []
        for k, pair in enumerate(frame.itertuples(index=False)):
            for side, image_id in enumerate((pair.image_a, pair.image_b)):
                index = 2 * k + side + 1
                try:
                    image = load_rgb_image(Path(image_root) / image_id, loading="viewer")
                except ImageLoadError as err:
                    raise ImageLoadError(err.path, f"{err.reason} (line {k + 2} of {pairs_csv})") from None
                image.save(tmp / IMAGES_DIR / f"{index}.jpg", format="JPEG", quality=quality)
                sources.append([index, image_id, k + 1, f"{pair.clip_cos:.6f}", f"{pair.dino_cos:.6f}"])
        with open(tmp / QUESTIONS, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(QUESTION_HEADER)
            writer.writerows([index, "", "", ""] for index in range(1, 2 * len(frame) + 1))
        with open(tmp / SOURCES, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["Index", "image", "pair", "clip_cos", "dino_cos"])
            writer.writerows(sources)
        if output.exists():
            output.rmdir()  # empty (checked above)
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(output, len(frame), top)


def _benchmark_folder(given: str | Path) -> Path:
    """The absolute folder to create. The folder is built beside it and renamed into place, so it
    cannot be the current folder or one above it (`-o .` would have to replace the folder we are in)."""
    output = Path(given).resolve()
    if not output.name or Path.cwd().resolve().is_relative_to(output):
        raise MiningError(
            f"-o {str(given) or '.'!r} is {output}, the current folder or one above it; "
            "give the name of a new folder to create, e.g. -o my-mmvp"
        )
    return output
