"""Referring expressions (RefCOCO, RefCOCO+, RefCOCOg) as region-level samples and training records.

Source layout: the Hugging Face releases `lmms-lab/RefCOCO`, `lmms-lab/RefCOCOplus`,
`lmms-lab/RefCOCOg` (what lmms-eval reads): parquet files named `<split>-NNNNN-of-NNNNN.parquet`,
or JSON Lines copies named `<split>.jsonl`. Columns used: `question_id`, `answer` (the referring
expressions of one object, a list), `bbox` (COCO `[x, y, width, height]` in pixels of the
picture), `file_name` (the COCO train2014 picture), `image` (the picture, `{"bytes": ...}`;
optional when an image folder holds `file_name`). Each expression is one sample, as lmms-eval
explodes them.

A training record (`rec_record`) is LLaVA's record with LION's region-level question and answer:
the expression in the question, the box in the answer normalised to the model's input frame with
3 decimals (`boxes.format_box`), so a model trained with `image_aspect_ratio` pad learns the box
where it sees the object. Extra keys say what the answer is: `task` "region" (the mixture of
adapters' task), `box_frame`, `bbox` (the source box, xyxy pixels) and `image_size`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..options import option
from ..released import check_unique, read_records, release_files
from . import boxes

# LION's region-level question ("In the image <image>, can you locate ... and let me know its
# coordinates?", its playground notebook), with <image> first as LLaVA puts it.
REC_QUESTION = "In the image, can you locate {expression} and let me know its coordinates?"
REGION_TASK = "region"  # the record's `task` for LION's mixture of adapters (model/moa.py)
CONVERT = frozenset({"rec"})  # the `data` subcommand whose flags RecConvertConfig's fields are


class RecDataError(ValueError):
    """A RefCOCO-style row that cannot be used; the message names the file and row."""


@dataclass(frozen=True)
class RecSample:
    sample_id: str  # "<split>:<question_id>:<k>", k the expression's place in the row's list
    split: str
    expression: str
    box: boxes.Box  # xyxy pixels of the picture
    width: int
    height: int
    file_name: str
    image_path: Path | None  # the picture as a file, or
    image_bytes: bytes | None  # inside the row
    where: str


def split_of(path: Path) -> str:
    """`val-00000-of-00001.parquet` -> val; `testA.jsonl` -> testA (Hugging Face's file naming)."""
    return path.name.split("-")[0].split(".")[0]


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    found = sorted(path.glob("*.parquet")) + sorted(path.glob("*.jsonl"))
    return found or sorted(path.glob("data/*.parquet"))


def _image_bytes(row: Mapping[str, Any], where: str) -> bytes | None:
    image = row.get("image")
    data = image.get("bytes") if isinstance(image, Mapping) else None
    if isinstance(data, str):  # a JSON Lines copy keeps the bytes as base64 text
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            raise RecDataError(f"{where}: image.bytes is not valid base64") from None
    return bytes(data) if isinstance(data, (bytes, bytearray)) else None


def _size(source: Path | bytes, where: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.size  # the header only
    except FileNotFoundError:
        raise RecDataError(f"{where}: picture {source} not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise RecDataError(f"{where}: cannot read the picture's size ({err})") from None


def _box(row: Mapping[str, Any], width: int, height: int, where: str) -> boxes.Box:
    raw = row.get("bbox")
    try:
        values = [float(v) for v in raw]
    except (TypeError, ValueError):
        raise RecDataError(f"{where}: bbox must be four numbers [x, y, width, height], got {raw!r}") from None
    if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
        raise RecDataError(
            f"{where}: bbox must be [x, y, width, height] with width and height > 0, got {raw!r}"
        )
    box = boxes.xywh_to_xyxy(values)
    if box[0] < 0 or box[1] < 0 or box[2] > width + 0.5 or box[3] > height + 0.5:  # COCO rounds to 0.01
        raise RecDataError(f"{where}: bbox {raw!r} lies outside the {width}x{height} picture")
    return box


def _expressions(row: Mapping[str, Any], where: str) -> list[str]:
    raw = row.get("answer")
    raw = raw.tolist() if hasattr(raw, "tolist") else raw  # parquet lists arrive as numpy arrays
    texts = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, Sequence) else None
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise RecDataError(f"{where}: answer must be a non-empty list of referring expressions, got {raw!r}")
    return [t.strip() for t in texts]


def _samples(row: Mapping[str, Any], split: str, images: Path | None, where: str) -> list[RecSample]:
    for name in ("question_id", "file_name"):
        if row.get(name) is None:
            raise RecDataError(f"{where}: missing field {name!r}")
    file_name = str(row["file_name"])
    data = _image_bytes(row, where)
    if data is None and images is None:
        raise RecDataError(
            f"{where}: the row has no image bytes: pass the folder holding {file_name} (--images)"
        )
    path = None if data is not None else images / file_name
    width, height = _size(data if data is not None else path, where)
    box = _box(row, width, height, where)
    return [
        RecSample(
            f"{split}:{row['question_id']}:{k}", split, text, box, width, height, file_name, path, data, where
        )
        for k, text in enumerate(_expressions(row, where))
    ]


def read_rec_samples(data: str | Path, images: str | Path | None = None) -> list[RecSample]:
    """Every expression of a release folder (or one file) in file order, splits by file name."""
    expected = "<split>-*.parquet or <split>.jsonl"
    files = release_files(Path(data), _files, RecDataError, "RefCOCO", expected)
    folder = Path(images) if images is not None else None
    samples = []
    for path in files:
        for where, row in read_records([path], RecDataError):
            samples += _samples(row, split_of(path), folder, where)
    if not samples:
        raise RecDataError(f"{data}: the RefCOCO files hold no rows")
    check_unique([(s.sample_id, s.where) for s in samples], "sample", RecDataError)
    return samples


def answer_box(sample: RecSample, frame: boxes.BoxFrame) -> boxes.Box:
    """The sample's box in the model's input frame, normalised; a crop that cuts it is an error
    (the answer would name a box the model cannot see whole)."""
    to_input = boxes.to_model_input(sample.width, sample.height, frame)
    seen = boxes.visible_fraction(sample.box, to_input)
    if seen < 1.0 - 1e-9:
        raise RecDataError(
            f"{sample.where} ({sample.sample_id}): the {frame} frame cuts the box ({100 * seen:.0f}% visible); "
            "use the pad frame (LLaVA-1.5's image_aspect_ratio pad) for region-level data"
        )
    return boxes.clip(to_input.apply(sample.box))


def rec_record(sample: RecSample, frame: boxes.BoxFrame = "pad", image_prefix: str = "") -> dict[str, Any]:
    """A LLaVA training record for one expression (see the module docstring)."""
    answer = boxes.format_box(answer_box(sample, frame))
    question = REC_QUESTION.format(expression=sample.expression)
    return {
        "id": sample.sample_id,
        "image": image_prefix + sample.file_name,
        "conversations": [
            {"from": "human", "value": "<image>\n" + question},
            {"from": "gpt", "value": answer},
        ],
        "task": REGION_TASK,
        "box_frame": frame,
        "bbox": [round(v, 2) for v in sample.box],
        "image_size": [sample.width, sample.height],
    }


# ---------------------------------------------------------------------------------------------
# The verb: `mof-llava data rec`


@dataclass(frozen=True, kw_only=True)
class RecConvertConfig:
    data: Path = option(
        help="a RefCOCO-style release folder (<split>-*.parquet or <split>.jsonl) or one file",
        actions=CONVERT,
    )
    output: Path = option(help="the LLaVA training file to write (JSON Lines)", actions=CONVERT)
    images: Path | None = option(
        None,
        "folder holding the rows' file_name pictures (needed when rows carry no image bytes)",
        actions=CONVERT,
    )
    frame: str = option(
        "pad",
        "input frame of the answers: pad (LLaVA-1.5 stage 2) or crop",
        choices=boxes.INPUT_FRAMES,
        actions=CONVERT,
    )
    image_prefix: str = option(
        "", "written before file_name in each record's image path, e.g. coco/train2014/", actions=CONVERT
    )


@dataclass(frozen=True)
class RecConvertResult:
    output: Path
    records: int
    splits: dict[str, int]  # split -> records written


def convert_rec(config: RecConvertConfig) -> RecConvertResult:
    """Write one training record per referring expression; any bad row stops it, naming the row."""
    import json

    from ..atomic import write_text_atomic

    samples = read_rec_samples(config.data, config.images)
    lines = [json.dumps(rec_record(s, config.frame, config.image_prefix)) for s in samples]  # type: ignore[arg-type]
    write_text_atomic(config.output, "".join(line + "\n" for line in lines))
    splits: dict[str, int] = {}
    for s in samples:
        splits[s.split] = splits.get(s.split, 0) + 1
    return RecConvertResult(Path(config.output), len(lines), splits)
