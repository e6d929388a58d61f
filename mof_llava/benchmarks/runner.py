"""Generate a benchmark's answers with a model: batched, sharded over processes, resumable.

Layout of an output folder:
    run.json                          the settings of the run (a resumed run must match them)
    answers.part-<rank>-of-<world>.jsonl  each process appends its finished batches here
    answers.jsonl                     all answers in benchmark order (written when every shard is done)
    metrics.json                      the scores plus model, settings, data files and code version

Sharding: under torchrun each process takes every `world`-th question (rank r takes r, r+world,
...), so the split is deterministic; a single process takes everything. Within a shard, questions
are generated longest prompt first so batches need little padding and memory peaks early.

Resuming: every process first collects the questions already answered in any part file (of any
earlier world size) or in `answers.jsonl`, cuts a torn last line off its own part file, and
answers only the rest. When all processes are done, rank 0 merges the parts in question order,
refusing duplicates and gaps, writes `answers.jsonl` atomically, removes the parts and scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..atomic import write_json_atomic
from ..prompts import model_prompt
from .answers import (
    AnswerWriter,
    answer_key,
    make_answer,
    merge_answers,
    read_answers,
    read_complete_lines,
    recover_answer_file,
    write_answers_atomic,
)
from .provenance import code_version, describe_files
from .task import EvalQuestion, EvalTask

logger = logging.getLogger(__name__)

ANSWERS_FILE = "answers.jsonl"
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"
PART_GLOB = "answers.part-*-of-*.jsonl"
BARRIER_TIMEOUT = timedelta(hours=2)
RESULTS_ROOT = Path("eval_results")
# Folder names that say what a folder is, not which model: a training stage writes `model/` (and the
# Trainer `checkpoint-<step>/`), inside `<run>/` or `<run>/stage<N>/`.
_GENERIC_MODEL_DIR = re.compile(r"model|checkpoint-\d+")
_STAGE_DIR = re.compile(r"stage\d+")

# (images, prompts) -> answers, one per prompt: the text, or {"text": ..., "metadata": {...}} for an
# answerer that records more than its answer (MMVP-VLM's probabilities and logits)
GenerateFn = Callable[[list[Any], list[str]], list[Any]]


class RunMismatchError(ValueError):
    pass


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (rank 0 of 1 when started alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Distributed:
        return cls(
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)),
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def init(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                # gloo on every device: the processes only ever meet at barriers. The timeout bounds
                # how long a finished rank waits for the slowest one (strided shards keep that short).
                dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


@dataclass
class RunOptions:
    output_dir: Path
    model: str  # model folder (recorded)
    model_id: str  # the answer lines' model_id
    batch_size: int = 8
    limit: int | None = None  # only the first N questions (smoke runs)
    progress: bool = True
    model_info: dict[str, Any] = field(default_factory=dict)  # recorded: config, dtype, device
    ablation: dict[str, str] | None = None  # an inference-time tower ablation (mixer.TowerAblation)


def result_name(model: str | Path) -> str:
    """The name a model's results go by (default output folder, answer lines' model_id, table rows):
    the model folder's name, or for a folder a training stage wrote, the run's name with the stage:
    `runs/imof-7b/stage2/model` -> `imof-7b-stage2`, `runs/imof-7b/model` -> `imof-7b`,
    `runs/imof-7b/stage2/checkpoint-500` -> `imof-7b-stage2-checkpoint-500`."""
    path = Path(model).resolve()
    if not _GENERIC_MODEL_DIR.fullmatch(path.name):
        return path.name
    parts, parent = [] if path.name == "model" else [path.name], path.parent
    if _STAGE_DIR.fullmatch(parent.name):
        parts.insert(0, parent.name)
        parent = parent.parent
    if parent.name:
        parts.insert(0, parent.name)
    return "-".join(parts) or path.name


def default_output_dir(model: str | Path, benchmark: str) -> Path:
    """`eval_results/<result name>/<benchmark>`: one folder per model and benchmark."""
    return RESULTS_ROOT / result_name(model) / benchmark


def shard(questions: Sequence[EvalQuestion], rank: int, world_size: int) -> list[EvalQuestion]:
    return list(questions[rank::world_size])


def part_path(output_dir: Path, rank: int, world_size: int) -> Path:
    return output_dir / f"answers.part-{rank:03d}-of-{world_size:03d}.jsonl"


def prompts_digest(questions: Sequence[EvalQuestion]) -> str:
    """sha256 of every question's id and text: what the model is asked, independent of file paths."""
    digest = hashlib.sha256()
    for q in questions:
        digest.update(json.dumps([answer_key(q.question_id), q.text], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def run_signature(task: EvalTask, options: RunOptions) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption: whatever decides the
    answers. Scoring settings (grader, matching rules, labels) may change."""
    return {
        "benchmark": task.benchmark,
        "model": str(Path(options.model).resolve()),
        "template": task.template,
        "max_new_tokens": task.max_new_tokens,
        "image_aspect_ratio": task.image_aspect_ratio,
        "image_loading": task.image_loading,
        "questions": len(task.questions),
        "prompts_sha256": prompts_digest(task.questions),
        # None when none, as a folder recorded before the option reads: an ablated run's answers
        # never mix with the model's own
        "ablation": options.ablation,
        # LION's options (lion.py): None for a model without them, as a folder recorded before them reads
        "moa_task": task.moa_task,
        "tags": task.tags,
    }


def run_provenance(task: EvalTask, options: RunOptions, world_size: int, questions: int) -> dict[str, Any]:
    """What metrics.json records under `run` about how the answers were made."""
    return {
        "model": str(Path(options.model).resolve()),
        "model_id": options.model_id,
        **options.model_info,
        "ablation": options.ablation,
        "moa_task": task.moa_task,
        "tags": task.tags,
        "template": task.template,
        "max_new_tokens": task.max_new_tokens,
        "image_aspect_ratio": task.image_aspect_ratio,
        "image_loading": task.image_loading,
        "decoding": "greedy",
        "batch_size": options.batch_size,
        "settings": task.settings,
        "data_files": describe_files(task.data_files),
        "code_version": code_version(),
        "world_size": world_size,
        "questions": questions,
        "limit": options.limit,
        "command": sys.argv,
    }


def _check_or_record_run(output_dir: Path, signature: dict[str, Any], provenance: dict[str, Any]) -> None:
    """Refuse a folder whose answers were made differently; in a new folder record the signature,
    and the provenance `eval merge` puts into metrics.json when it finishes the run by hand."""
    path = output_dir / RUN_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        changed = sorted(k for k in signature if previous.get(k) != json.loads(json.dumps(signature[k])))
        if changed:
            raise RunMismatchError(
                f"{output_dir} holds answers of a run with different {', '.join(changed)} "
                f"(see {path}); use another --output-dir, or delete the folder to start over"
            )
    else:
        write_json_atomic(path, {**signature, "provenance": provenance}, indent=1)


def answered_ids(output_dir: Path, own_part: Path) -> set[str]:
    """Questions already answered by earlier (possibly interrupted) runs into this folder."""
    done: set[str] = set()
    merged = output_dir / ANSWERS_FILE
    if merged.exists():
        done.update(answer_key(r["question_id"]) for r in read_complete_lines(merged))
    for part in sorted(output_dir.glob(PART_GLOB)):
        records = recover_answer_file(part) if part == own_part else read_complete_lines(part)
        done.update(answer_key(r["question_id"]) for r in records)
    return done


def _batches(items: Sequence[EvalQuestion], size: int) -> list[list[EvalQuestion]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _load_images(batch: Sequence[EvalQuestion], loading: str) -> list[Any]:
    from ..data.images import ImageLoadError

    images = []
    for q in batch:
        try:
            images.append(q.load_image(loading))
        except ImageLoadError as err:
            raise ImageLoadError(err.path, f"{err.reason} (image of question {q.question_id})") from None
    return images


def _answer_line(q: EvalQuestion, answer: Any, model_id: str) -> dict[str, Any]:
    text, metadata = (answer, None) if isinstance(answer, str) else (answer["text"], answer.get("metadata"))
    return make_answer(
        q.question_id, q.record_prompt or q.text, text, model_id, extra=q.answer_fields, metadata=metadata
    )


def generate_shard(
    task: EvalTask,
    questions: Sequence[EvalQuestion],
    generate: GenerateFn,
    writer: AnswerWriter,
    options: RunOptions,
    position: int = 0,
) -> int:
    """Answer `questions` batch by batch, appending each finished batch to `writer`. Images of the
    next batch load in a background thread while the current one generates."""
    from tqdm import tqdm

    ordered = sorted(questions, key=lambda q: len(q.text), reverse=True)
    batches = _batches(ordered, options.batch_size)
    bar = tqdm(
        total=len(ordered),
        desc=f"{task.benchmark} rank {position}",
        position=position,
        disable=not options.progress,
        unit="q",
        dynamic_ncols=True,
    )
    done = 0
    with ThreadPoolExecutor(max_workers=1) as loader:
        loading = task.image_loading
        pending = loader.submit(_load_images, batches[0], loading) if batches else None
        for i, batch in enumerate(batches):
            images = pending.result()
            pending = loader.submit(_load_images, batches[i + 1], loading) if i + 1 < len(batches) else None
            # no template: a contrastive model reads the text as it is
            prompts = [model_prompt(q.text, task.template) if task.template else q.text for q in batch]
            texts = generate(images, prompts)
            if len(texts) != len(batch):
                raise RuntimeError(f"the model returned {len(texts)} answers for a batch of {len(batch)}")
            writer.write([_answer_line(q, t, options.model_id) for q, t in zip(batch, texts)])
            done += len(batch)
            bar.update(len(batch))
    bar.close()
    return done


def merge_parts(output_dir: Path, questions: Sequence[EvalQuestion]) -> Path:
    """Merge `answers.jsonl` (if any) and all part files into `answers.jsonl`, in question order;
    remove the parts afterwards."""
    merged_path = output_dir / ANSWERS_FILE
    previous = read_answers(merged_path) if merged_path.exists() else []
    # A crash between writing answers.jsonl and removing the parts leaves the same lines (same
    # answer_id) in both places: one answer, not two.
    copied = {(answer_key(r["question_id"]), r["answer_id"]) for r in previous if "answer_id" in r}
    parts = sorted(output_dir.glob(PART_GLOB))
    sources = [previous] + [
        [
            r
            for r in read_complete_lines(p)
            if (answer_key(r["question_id"]), r.get("answer_id")) not in copied
        ]
        for p in parts
    ]
    names = [str(merged_path)] + [str(p) for p in parts]
    ordered = merge_answers(sources, [q.question_id for q in questions], names)
    write_answers_atomic(merged_path, ordered)
    for part in parts:
        part.unlink()
    return merged_path


def run_task(
    task: EvalTask,
    load_generator: Callable[[], GenerateFn],
    options: RunOptions,
    dist: Distributed | None = None,
) -> dict[str, Any] | None:
    """Generate the task's answers (or those still missing), merge and score. `load_generator` is
    called only when this process has questions left, so a finished run never loads the model.
    Returns the metrics on rank 0 and None on the other ranks."""
    dist = dist or Distributed.from_env()
    dist.init()
    try:
        return _run(task, load_generator, options, dist)
    finally:
        dist.close()


def _run(task: EvalTask, load_generator, options: RunOptions, dist: Distributed) -> dict[str, Any] | None:
    output_dir = Path(options.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    questions = task.questions[: options.limit] if options.limit else task.questions
    if dist.is_main:
        provenance = run_provenance(task, options, dist.world_size, len(questions))
        _check_or_record_run(output_dir, run_signature(task, options), provenance)
    dist.barrier()

    started = time.time()
    own_part = part_path(output_dir, dist.rank, dist.world_size)
    done = answered_ids(output_dir, own_part)
    todo = [q for q in shard(questions, dist.rank, dist.world_size) if answer_key(q.question_id) not in done]
    if dist.is_main:
        logger.info(
            "%s: %d questions, %d already answered, %d to generate on this process",
            task.benchmark,
            len(questions),
            len(done),
            len(todo),
        )
    generated = 0
    if todo:
        generate = load_generator()
        with AnswerWriter(own_part) as writer:
            generated = generate_shard(task, todo, generate, writer, options, position=dist.rank)
    elapsed = time.time() - started
    dist.barrier()
    if not dist.is_main:
        return None
    answers_path = merge_parts(output_dir, questions)
    for name, export in task.exports.items():
        export(answers_path, output_dir / name)
    if len(questions) < len(task.questions):  # the scorers refuse a partial answer file
        metrics = {
            "benchmark": task.benchmark,
            "score": None,
            "note": f"--limit {options.limit}: {len(questions)} of {len(task.questions)} questions answered; not scored",
        }
    else:
        metrics = task.score(answers_path)
    metrics["run"] = {
        **provenance,
        "generated_by_rank0_this_run": generated,
        "rank0_seconds": round(elapsed, 3),
        "answers": str(answers_path),
    }
    write_json_atomic(output_dir / METRICS_FILE, metrics, indent=1)
    return metrics
