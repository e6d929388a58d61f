"""Small benchmark folders in the real on-disk formats, with made-up pictures and questions.

For tests, demos and speed measurements: every writer produces exactly the layout and file
formats the loaders read for the released benchmarks (CSV headers, JSON Lines, base64 TSV, GQA's
question JSON), so a run on these folders exercises the same code paths as a real evaluation. The
pictures come from the one scene generator (`mof_llava.scenes`).
"""

from __future__ import annotations

import base64
import csv
import io
import json
from pathlib import Path

from ..scenes import canvas
from ..scenes.drawing import SHAPE_COLOURS
from . import gqa, mmvp, mmvp_vlm, pope

_COLOURS = list(SHAPE_COLOURS)  # red, green, blue, yellow, white, black: the words of the made-up text


def picture(seed: int, size: tuple[int, int] = (72, 56)):
    """A small picture of coloured shapes (`mof_llava.scenes.canvas.picture`), varying with `seed`."""
    return canvas.picture(seed, size)


def _save_jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    picture(seed).save(path, format="JPEG")


def write_mmvp(root: str | Path, pairs: int = 3, header: str = "Index") -> Path:
    """`Questions.csv` + `MMVP Images/<Index>.jpg`; pair k asks one question about two pictures."""
    root = Path(root)
    rows = []
    for k in range(pairs):
        question = f"Is the square on the {'left' if k % 2 else 'right'} side of the picture?"
        for member in (0, 1):
            index = 2 * k + 1 + member
            rows.append([index, question, "(a) Yes (b) No", "(a)" if member == 0 else "(b)"])
            _save_jpeg(root / mmvp.IMAGE_DIR / f"{index}.jpg", index)
    with open(root / mmvp.QUESTIONS_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([header, "Question", "Options", "Correct Answer"])
        writer.writerows(rows)
    return root


def write_mmvp_vlm(root: str | Path, pairs_per_pattern: int = 1) -> Path:
    """`Questions.csv` + `MLLM_VLM Images/<Type>/<Question ID>.jpg`, ids numbered per pattern block."""
    root = Path(root)
    rows = []
    for p, pattern_type in enumerate(mmvp_vlm.PATTERNS):
        for k in range(pairs_per_pattern):
            for member in (0, 1):
                qid = 30 * p + 2 * k + 1 + member
                colour = _COLOURS[(qid + 3) % 6]
                rows.append([qid, pattern_type, f"a {colour} square"])
                _save_jpeg(root / mmvp_vlm.IMAGE_DIR / pattern_type / f"{qid}.jpg", qid)
    with open(root / mmvp_vlm.QUESTIONS_CSV, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Question ID", "Type", "Statement"])
        writer.writerows(rows)
    return root


def write_pope(root: str | Path, per_split: int = 4, llava_question_file: bool = True) -> Path:
    """LLaVA's layout: `coco/coco_pope_<split>.json`, `val2014/`, and `llava_pope_test.jsonl`."""
    root = Path(root)
    (root / "coco").mkdir(parents=True, exist_ok=True)
    objects = ["dog", "car", "person", "chair", "umbrella", "cup"]
    annotations = {}
    for s, split in enumerate(pope.SPLITS):
        lines = []
        for i in range(1, per_split + 1):
            image = f"COCO_val2014_{(i + 1) // 2:012d}.jpg"
            obj = objects[(i + s) % len(objects)]
            article = "an" if obj[0] in "aeiou" else "a"
            lines.append(
                {
                    "question_id": i,
                    "image": image,
                    "text": f"Is there {article} {obj} in the image?",
                    "label": "yes" if i % 2 else "no",
                }
            )
            _save_jpeg(root / "val2014" / image, (i + 1) // 2)
        annotations[split] = lines
        (root / "coco" / f"coco_pope_{split}.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if llava_question_file:
        with open(root / pope.LLAVA_QUESTION_FILE, "w") as handle:
            for split in pope.SPLITS:
                for x in annotations[split]:
                    qid = x["question_id"] + pope.LLAVA_ID_OFFSETS[split]
                    text = f"{x['text']}\n{pope.SHORT_ANSWER}"
                    handle.write(
                        json.dumps({"question_id": qid, "image": x["image"], "text": text, "category": split})
                        + "\n"
                    )
    return root


def _jpeg_base64(seed: int) -> str:
    buffer = io.BytesIO()
    picture(seed).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_mmbench(path: str | Path, questions: int = 3) -> Path:
    """A dev-style TSV: base questions with 2, 3 or 4 options and their circular rows."""
    import pandas as pd

    path = Path(path)
    records = []
    for q in range(questions):
        n_options = 2 + q % 3
        options = [f"a {_COLOURS[(q + j) % 6]} square" for j in range(n_options)]
        answer = q % n_options
        for k in range(n_options):  # rotation k: option j moves to position (j + k) % n
            rotated = [options[(j - k) % n_options] for j in range(n_options)]
            row = {
                "index": q + 1 + k * 1_000_000,
                "question": "Which picture is shown?",
                "hint": "Look at the square." if q % 2 else float("nan"),
            }
            for j, letter in enumerate("ABCD"):
                row[letter] = rotated[j] if j < n_options else float("nan")
            row.update(
                answer="ABCD"[(answer + k) % n_options],
                category="image_topic",
                image=_jpeg_base64(q),
                source="synthetic",
                **{"l2-category": "coarse_perception"},
                comment=float("nan"),
                split="dev",
            )
            records.append(row)
    columns = [
        "index",
        "question",
        "hint",
        "A",
        "B",
        "C",
        "D",
        "answer",
        "category",
        "image",
        "source",
        "l2-category",
        "comment",
        "split",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(records, columns=columns).to_csv(path, sep="\t", index=False)
    return path


def write_gqa(root: str | Path, questions: int = 4) -> Path:
    """LLaVA's layout: `llava_gqa_testdev_balanced.jsonl`, `data/testdev_balanced_questions.json`,
    `data/images/<imageId>.jpg`."""
    root = Path(root)
    official = {}
    for i in range(questions):
        qid = str(201307251 + i)
        image_id = f"n{161313 + i // 2}"
        binary = i % 2 == 0
        official[qid] = {
            "question": "Is the square red?" if binary else "What colour is the square?",
            "answer": "yes" if binary else _COLOURS[i % 6],
            "fullAnswer": "",
            "imageId": image_id,
            "isBalanced": True,
            "groups": {"global": None if binary else "colour", "local": "c-square"},
            "types": {
                "structural": "verify" if binary else "query",
                "semantic": "attr",
                "detailed": "verifyAttr" if binary else "queryAttr",
            },
            "semantic": [
                {"operation": "select", "argument": "square (1)", "dependencies": []},
                {
                    "operation": "verify color" if binary else "query",
                    "argument": "red" if binary else "color",
                    "dependencies": [0],
                },
            ],
            "semanticStr": "",
            "entailed": [],
            "equivalent": [qid],
            "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
        }
        _save_jpeg(root / "data" / "images" / f"{image_id}.jpg", i // 2)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "data" / gqa.OFFICIAL_QUESTIONS).write_text(json.dumps(official))
    with open(root / gqa.LLAVA_QUESTIONS, "w") as handle:
        for q in gqa.questions_from_official(official):
            handle.write(
                json.dumps(
                    {"question_id": q.question_id, "image": q.image, "text": q.text, "category": "default"}
                )
                + "\n"
            )
    return root
