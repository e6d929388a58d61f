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
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .answers import answer_key, check_coverage, load_answer_index
from .registry import Benchmark, option
from .run_options import RunFlags

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


def pair_logits(model, processor, pairs: Sequence[ImagePair], model_type: str, device: str = "cpu") -> list:
    """For each pair, the 2x2 image-text logits [statement][image]. All pairs of the batch go
    through the model together; the embeddings of one image or text do not depend on the others."""
    import torch

    from ..data.images import load_rgb_image

    images = [load_rgb_image(p) for pair in pairs for p in pair.image_paths]
    texts = [s.text for pair in pairs for s in (pair.first, pair.second)]
    inputs = processor(text=texts, images=images, return_tensors="pt", **text_padding(model_type))
    with torch.no_grad():
        logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits_per_text.float().cpu()
    return [logits[2 * i : 2 * i + 2, 2 * i : 2 * i + 2].tolist() for i in range(len(pairs))]


def evaluate_model(
    model, processor, pairs: Sequence[ImagePair], model_type: str, batch_pairs: int = 8, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Answer lines (LLaVA's format; `text` is the picked image) for every statement."""
    from tqdm import tqdm

    from .answers import make_answer

    model_id = Path(str(getattr(model.config, "_name_or_path", "") or model_type)).name
    lines = []
    for start in tqdm(range(0, len(pairs), batch_pairs), desc="mmvp-vlm", unit="batch"):
        batch = pairs[start : start + batch_pairs]
        for pair, block in zip(batch, pair_logits(model, processor, batch, model_type, device)):
            for statement, logits in zip((pair.first, pair.second), block):
                first, p_first = picks_first_image(logits)
                lines.append(
                    make_answer(
                        statement.question_id,
                        statement.text,
                        pick_label(first),
                        model_id,
                        metadata={"p_img1": p_first, "logits": logits},
                    )
                )
    return lines


def write_pairs_csv(metrics: Mapping[str, Any], path: str | Path) -> None:
    """The per-pair table the reference script writes (`output.csv`), plus correctness."""
    from ..atomic import write_text_atomic

    header = ["qid1", "qid2", "pred1", "pred2", "gt1", "gt2", "correct"]
    rows = [",".join(header)] + [",".join(str(r[h]) for h in header) for r in metrics["per_pair"]]
    write_text_atomic(path, "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------------------------
# Registration (mof-llava eval mmvp-vlm): not through the generation runner; 270 images take one
# process, so `run` writes the answers in one go (no shards, nothing to resume).


@dataclass(frozen=True, kw_only=True)
class MMVPVLMOptions:
    data: Path = option(help="folder with Questions.csv and 'MLLM_VLM Images/'")


@dataclass(frozen=True, kw_only=True)
class ContrastiveRunFlags(RunFlags):
    model: Path = option(help="CLIP or SigLIP folder")
    batch_size: int = option(8, "image pairs per batch")


def run(o: MMVPVLMOptions, flags: ContrastiveRunFlags, output_dir: Path) -> dict | None:
    """Evaluate a CLIP-family model; writes answers.jsonl, metrics.json and pairs.csv."""
    from ..atomic import write_json_atomic
    from ..threads import apply_cpu_threads
    from .answers import write_answers_atomic
    from .generation import pick_device
    from .provenance import code_version, describe_files
    from .runner import Distributed

    if Distributed.from_env().rank != 0:  # 270 images: one process does it; the others stand by
        return None
    device = pick_device(flags.device)
    if device.startswith("cpu"):
        apply_cpu_threads(flags.threads, "--threads")
    pairs = read_pairs(o.data)
    model, processor, model_type = load_contrastive_model(flags.model, device)
    lines = evaluate_model(model, processor, pairs, model_type, flags.batch_size, device)
    answers_path = output_dir / "answers.jsonl"
    write_answers_atomic(answers_path, lines)
    metrics = score_answer_file(answers_path, pairs)
    csv_path, image_dir = find_files(o.data)
    metrics["run"] = {
        "model": str(Path(flags.model).resolve()),
        "model_type": model_type,
        "device": device,
        "text_prefix": TEXT_PREFIX,
        "data_files": describe_files({"questions": csv_path, "images": image_dir}),
        "code_version": code_version(),
        "command": sys.argv,
    }
    write_json_atomic(output_dir / "metrics.json", metrics, indent=1)
    write_pairs_csv(metrics, output_dir / "pairs.csv")
    return metrics


BENCHMARK = Benchmark(
    name="mmvp-vlm",
    description="MMVP-VLM: CLIP-family models on 135 image pairs, 9 patterns; pair accuracy",
    options=MMVPVLMOptions,
    score=lambda o, answers: score_answer_file(answers, read_pairs(o.data)),
    run=run,
    run_flags=ContrastiveRunFlags,
)
