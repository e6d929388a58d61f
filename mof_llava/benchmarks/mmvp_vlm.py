"""MMVP-VLM: the CLIP-family version of MMVP. 9 visual patterns x 15 pairs of images; each image
has a statement, and a model must match each statement to its own image of the pair.

Files (Hugging Face `MMVP/MMVP_VLM`): `Questions.csv` with columns `Question ID, Type, Statement`
and images `MLLM_VLM Images/<Type>/<Question ID>.jpg` (the folder names are the `Type` values,
e.g. "Camera Perspective"; the repo README's underscore names are wrong).

Scoring follows MMVP's `scripts/evaluate_vlm.py`:
- rows are taken two at a time; the pair's images are `<Type of row 1>/<id>.jpg` for both ids;
- each statement becomes the text `"a photo of " + statement`; for statement k the model's
  image-text logits of the two images are turned into probabilities with a softmax over the
  images, and the statement picks image 1 iff that probability is > 0.5 (a tie picks image 2);
- the right image comes from the id's parity: an odd id is image 1, an even id image 2;
- a pair is correct iff both statements pick their own image; per-pattern accuracy is over that
  pattern's pairs, and the average is the mean of the pattern accuracies.
The reference assigns the pattern by position (pair n -> pattern n // 15); we take it from the
`Type` column, which gives the same patterns on the released file and stays right on subsets. An
odd number of rows, or a pair whose rows name different types, is an error (the reference drops
the last row or reads both images from the first row's folder).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.images import DEFAULT_IMAGE_LOADING
from .answers import answer_key, check_coverage, load_answer_index
from .registry import Answerer, Benchmark, option
from .run_options import RunFlags
from .task import EvalQuestion, EvalTask

QUESTIONS_CSV = "Questions.csv"
IMAGE_DIR = "MLLM_VLM Images"
TEXT_PREFIX = "a photo of "

# Type (folder) -> the pattern name the paper and the reference script print, in their order.
PATTERNS = {
    "Orientation": "Orientation and Direction",
    "Presence": "Presence of Specific Features",
    "State": "State and Condition",
    "Quantity": "Quantity and Count",
    "Spatial": "Positional and Relational Context",
    "Color": "Color and Appearance",
    "Structural Character": "Structural Characteristics",
    "Text": "Texts",
    "Camera Perspective": "Viewpoint and Perspective",
}


class MMVPVLMDataError(ValueError):
    pass


@dataclass(frozen=True)
class Statement:
    question_id: int
    type: str
    statement: str

    @property
    def text(self) -> str:
        return TEXT_PREFIX + self.statement

    @property
    def target(self) -> int:
        """Image of the pair the statement describes: 0 (odd id) or 1 (even id)."""
        return 0 if self.question_id % 2 == 1 else 1


@dataclass(frozen=True)
class ImagePair:
    first: Statement
    second: Statement
    image_dir: Path

    @property
    def pattern(self) -> str:
        return PATTERNS.get(self.first.type, self.first.type)

    @property
    def image_paths(self) -> tuple[Path, Path]:
        folder = self.image_dir / self.first.type
        return folder / f"{self.first.question_id}.jpg", folder / f"{self.second.question_id}.jpg"


def find_files(data: str | Path) -> tuple[Path, Path]:
    data = Path(data)
    csv_path = data if data.is_file() else data / QUESTIONS_CSV
    return csv_path, csv_path.parent / IMAGE_DIR


def read_pairs(data: str | Path) -> list[ImagePair]:
    csv_path, image_dir = find_files(data)
    if not csv_path.is_file():
        raise MMVPVLMDataError(f"{csv_path}: MMVP-VLM Questions.csv not found")
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        rows = [r for r in csv.reader(handle) if any(c.strip() for c in r)]
    if not rows or [c.strip().lower() for c in rows[0][:3]] != ["question id", "type", "statement"]:
        raise MMVPVLMDataError(f"{csv_path}: expected the header 'Question ID,Type,Statement'")
    statements = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            statements.append(Statement(int(row[0]), row[1].strip(), row[2].strip()))
        except (ValueError, IndexError):
            raise MMVPVLMDataError(
                f"{csv_path}:{line}: expected 'Question ID,Type,Statement', got {row}"
            ) from None
    if len(statements) % 2:
        raise MMVPVLMDataError(f"{csv_path}: {len(statements)} statements; rows must come in pairs")
    pairs = []
    for first, second in zip(statements[0::2], statements[1::2]):
        if first.type != second.type:
            raise MMVPVLMDataError(
                f"{csv_path}: statements {first.question_id} and {second.question_id} form a pair but have "
                f"types {first.type!r} and {second.type!r}"
            )
        if first.target == second.target:
            raise MMVPVLMDataError(
                f"{csv_path}: pair ({first.question_id}, {second.question_id}) needs one odd and one even id"
            )
        pairs.append(ImagePair(first, second, image_dir))
    return pairs


# ---------------------------------------------------------------------------------------------
# Scoring


def picks_first_image(logits: Sequence[float]) -> tuple[bool, float]:
    """(statement picks image 1, probability of image 1): softmax over the pair's two images, image 1
    iff its probability is > 0.5."""
    top = max(logits)
    weights = [math.exp(v - top) for v in logits]
    p_first = weights[0] / sum(weights)
    return p_first > 0.5, p_first


def pick_label(first: bool) -> str:
    return "img1" if first else "img2"


def score_pairs(choices: Mapping[int, str], pairs: Sequence[ImagePair]) -> dict:
    """Metrics from the image each statement picked (`"img1"`/`"img2"`, keyed by question id)."""
    per_pattern: dict[str, list[bool]] = {}
    records = []
    for pair in pairs:
        pred = [choices[pair.first.question_id], choices[pair.second.question_id]]
        gold = [pick_label(s.target == 0) for s in (pair.first, pair.second)]
        ok = pred == gold
        per_pattern.setdefault(pair.pattern, []).append(ok)
        records.append(
            {
                "qid1": pair.first.question_id,
                "qid2": pair.second.question_id,
                "pred1": pred[0],
                "pred2": pred[1],
                "gt1": gold[0],
                "gt2": gold[1],
                "correct": ok,
            }
        )
    order = [p for p in PATTERNS.values() if p in per_pattern] + [
        p for p in per_pattern if p not in PATTERNS.values()
    ]
    patterns = {
        p: {"accuracy": 100.0 * sum(per_pattern[p]) / len(per_pattern[p]), "pairs": len(per_pattern[p])}
        for p in order
    }
    average = sum(v["accuracy"] for v in patterns.values()) / len(patterns)
    return {
        "benchmark": "mmvp-vlm",
        "score": average,
        "metric": "mean of the per-pattern pair accuracies (percent)",
        "average": average,
        "pairs_correct": sum(r["correct"] for r in records),
        "pairs": len(records),
        "per_pattern": patterns,
        "per_pair": records,
        **_intervals(per_pattern, order),
    }


def _intervals(per_pattern: Mapping[str, Sequence[bool]], order: Sequence[str]) -> dict[str, Any]:
    """Bootstrap interval of the average, resampling pairs within each pattern (the patterns are
    fixed in size, so each is a stratum)."""
    import numpy as np

    from . import intervals

    drawn = intervals.draw([np.asarray(per_pattern[p], dtype=float) for p in order])
    average = np.mean([100.0 * d.mean(axis=1) for d in drawn], axis=0)
    ci = intervals.percentile_interval(average)
    return {
        "score_ci95": ci,
        "average_ci95": ci,
        "bootstrap": intervals.describe("pair, within each pattern"),
    }


def score_answers(
    answers: Mapping[str, Mapping[str, Any]],
    pairs: Sequence[ImagePair],
    answers_path: Path | str = "<answers>",
) -> dict:
    """Score an answer file whose `text` is the picked image, `img1` or `img2`."""
    ids = [s.question_id for p in pairs for s in (p.first, p.second)]
    check_coverage(answers, ids, answers_path, "the MMVP-VLM questions file")
    choices = {}
    for qid in ids:
        text = str(answers[answer_key(qid)].get("text", "")).strip()
        if text not in ("img1", "img2"):
            raise MMVPVLMDataError(
                f"{answers_path}: answer to statement {qid} is {text!r}; expected 'img1' or 'img2'"
            )
        choices[qid] = text
    return score_pairs(choices, pairs)


def score_answer_file(answers_path: str | Path, pairs: Sequence[ImagePair]) -> dict:
    return score_answers(load_answer_index(answers_path), pairs, answers_path)


# ---------------------------------------------------------------------------------------------
# Running a CLIP-family model (transformers' CLIPModel, SiglipModel) from a local folder

CONTRASTIVE_MODEL_TYPES = ("clip", "siglip", "siglip2")


def load_contrastive_model(model_dir: str | Path, device: str = "cpu"):
    """(model, processor, model_type) for a CLIP or SigLIP checkpoint folder, in float32 whatever
    dtype the checkpoint was saved in (transformers would otherwise keep the saved dtype)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoProcessor

    model_type = AutoConfig.from_pretrained(model_dir).model_type
    if model_type not in CONTRASTIVE_MODEL_TYPES:
        raise MMVPVLMDataError(
            f"{model_dir}: MMVP-VLM scores image-text models ({', '.join(CONTRASTIVE_MODEL_TYPES)}); this is a "
            f"{model_type!r} checkpoint. For a mof-llava checkpoint, pass the CLIP model its vision tower came from."
        )
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    return model, AutoProcessor.from_pretrained(model_dir), model_type


def text_padding(model_type: str) -> dict[str, Any]:
    # SigLIP's text tower was trained on sequences padded to 64 tokens and pools the last one.
    return (
        {"padding": "max_length", "max_length": 64} if model_type.startswith("siglip") else {"padding": True}
    )


def image_text_logits(
    model, processor, images: Sequence[Any], texts: Sequence[str], model_type: str, device="cpu"
):
    """The model's logits [text][image] for every text against every image, in one forward."""
    import torch

    inputs = processor(text=list(texts), images=list(images), return_tensors="pt", **text_padding(model_type))
    with torch.no_grad():
        return model(**{k: v.to(device) for k, v in inputs.items()}).logits_per_text.float().cpu()


def pair_logits(model, processor, pairs: Sequence[ImagePair], model_type: str, device: str = "cpu") -> list:
    """For each pair, the 2x2 image-text logits [statement][image]. All pairs of the batch go
    through the model together; the embeddings of one image or text do not depend on the others."""
    from ..data.images import load_rgb_image

    images = [load_rgb_image(p) for pair in pairs for p in pair.image_paths]
    texts = [s.text for pair in pairs for s in (pair.first, pair.second)]
    logits = image_text_logits(model, processor, images, texts, model_type, device)
    return [logits[2 * i : 2 * i + 2, 2 * i : 2 * i + 2].tolist() for i in range(len(pairs))]


@dataclass(frozen=True)
class StatementQuestion(EvalQuestion):
    """A statement for the runner: its "image" is its pair's two images, the answer the one it picks."""

    pair_images: tuple[Path, Path] = (Path(), Path())

    def load_image(self, loading: str = DEFAULT_IMAGE_LOADING):
        from ..data.images import load_rgb_image

        return tuple(load_rgb_image(p, loading) for p in self.pair_images)


def make_score_fn(model, processor, model_type: str, device: str = "cpu"):
    """The runner's answerer for a CLIP-family model: each statement (text) against its pair's two
    images; the answer is the picked image, with p_img1 and the two logits as metadata."""

    def answer(image_pairs: list[tuple[Any, Any]], texts: list[str]) -> list[dict[str, Any]]:
        images = [image for pair in image_pairs for image in pair]
        logits = image_text_logits(model, processor, images, texts, model_type, device)
        lines = []
        for k in range(len(texts)):
            row = logits[k, 2 * k : 2 * k + 2].tolist()
            first, p_first = picks_first_image(row)
            lines.append({"text": pick_label(first), "metadata": {"p_img1": p_first, "logits": row}})
        return lines

    return answer


def _describe(config, device: str) -> dict[str, Any]:
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(config.model).model_type
    return {"model_type": model_type, "device": device, "dtype": "float32"}


def _load(task: EvalTask, config, device: str):
    model, processor, model_type = load_contrastive_model(config.model, device)
    return make_score_fn(model, processor, model_type, device)


def write_pairs_csv(metrics: Mapping[str, Any], path: str | Path) -> None:
    """The per-pair table the reference script writes (`output.csv`), plus correctness."""
    from ..atomic import write_text_atomic

    header = ["qid1", "qid2", "pred1", "pred2", "gt1", "gt2", "correct"]
    rows = [",".join(header)] + [",".join(str(r[h]) for h in header) for r in metrics["per_pair"]]
    write_text_atomic(path, "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------------------------
# Registration (mof-llava eval mmvp-vlm): through the runner like the MLLM benchmarks (sharded,
# resumable), its "generator" the CLIP scorer above


@dataclass(frozen=True, kw_only=True)
class MMVPVLMOptions:
    data: Path = option(help="folder with Questions.csv and 'MLLM_VLM Images/'")


@dataclass(frozen=True, kw_only=True)
class ContrastiveRunFlags(RunFlags):
    model: Path = option(help="CLIP or SigLIP folder")
    batch_size: int = option(8, "statements per batch (each against its pair's two images)")


def build_task(data: str | Path) -> EvalTask:
    """One question per statement, in file order; scoring also writes the reference script's
    per-pair table (pairs.csv) next to the answers."""
    pairs = read_pairs(data)
    questions = [
        StatementQuestion(s.question_id, s.text, pair_images=pair.image_paths)
        for pair in pairs
        for s in (pair.first, pair.second)
    ]

    def score(answers_path: Path) -> dict[str, Any]:
        metrics = score_answer_file(answers_path, pairs)
        write_pairs_csv(metrics, Path(answers_path).parent / "pairs.csv")
        return metrics

    csv_path, image_dir = find_files(data)
    return EvalTask(
        benchmark="mmvp-vlm",
        questions=questions,
        template=None,  # a contrastive model reads the statement as it is
        max_new_tokens=0,  # and generates nothing: it picks one of two images
        settings={"text_prefix": TEXT_PREFIX},
        data_files={"questions": str(csv_path), "images": str(image_dir)},
        score=score,
        image_aspect_ratio="processor",  # the CLIP processor's resize and centre crop
    )


BENCHMARK = Benchmark(
    name="mmvp-vlm",
    description="MMVP-VLM: CLIP-family models on 135 image pairs, 9 patterns; pair accuracy",
    options=MMVPVLMOptions,
    score=lambda o, answers: score_answer_file(answers, read_pairs(o.data)),
    build_task=lambda o, max_new_tokens: build_task(o.data),
    answerer=Answerer(describe=_describe, load=_load),
    run_flags=ContrastiveRunFlags,
)
