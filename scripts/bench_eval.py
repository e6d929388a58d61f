"""Evaluation throughput: answers per second of `mof-llava eval run`, batched vs one at a time,
and the time the scorers take on full-size answer files.

    .venv/bin/python scripts/bench_eval.py [--questions 48] [--batch-sizes 1,4,8,16] [--max-new-tokens 16] [--repeats 3]

Generation runs the real runner (sorting, batching, image prefetch, durable writes, merge,
scoring) on a synthetic POPE folder in the real format, with a tiny random MoF-LLaVA model
(I-MoF) on the CPU, or on CUDA when one is present; `--model DIR` times any saved model instead
(a converted LLaVA-1.5 checkpoint on a GPU: `--model DIR --max-new-tokens 64`). The model is loaded once; each timing is one
whole `run_task` into a fresh output folder, after one warm-up run; each batch size is timed
`--repeats` times and the fastest and median runs are reported (on a shared machine the fastest is
the best estimate of the code's own cost). Answers are identical across batch sizes (greedy
decoding, left padding; checked), so every configuration does the same work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path


def _machine() -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    # other work on a shared machine slows every configuration alike; the load shows how much
    info["load_average_1min"] = round(os.getloadavg()[0], 2)
    return info


def bench_generation(
    root: Path,
    questions: int,
    batch_sizes: list[int],
    max_new_tokens: int,
    device: str,
    repeats: int,
    model_dir: Path | None = None,
    dtype: str = "float32",
) -> list[dict]:
    from mof_llava.benchmarks import pope, synthetic
    from mof_llava.benchmarks.answers import read_answers
    from mof_llava.benchmarks.generation import load_model, make_generate_fn
    from mof_llava.benchmarks.runner import Distributed, RunOptions, run_task
    from mof_llava.testing.tiny import save_tiny_mof_llava

    if model_dir is None:
        model_dir = save_tiny_mof_llava(root / "model", mixer="interleave")
    data = synthetic.write_pope(root / "pope", per_split=max(1, questions // 3))
    task = pope.build_task(pope.resolve_paths(data), max_new_tokens=max_new_tokens)
    model, processor = load_model(model_dir, device, dtype)
    generate = make_generate_fn(model, processor, max_new_tokens)

    def one_run(batch_size: int, name: str) -> tuple[float, float, list]:
        """(whole run seconds, seconds inside generate calls, answers)."""
        out = root / name
        options = RunOptions(
            output_dir=out, model=str(model_dir), model_id=model_dir.name, batch_size=batch_size, progress=False
        )
        in_generate = []

        def timed(images, prompts):
            start = time.perf_counter()
            texts = generate(images, prompts)
            in_generate.append(time.perf_counter() - start)
            return texts

        start = time.perf_counter()
        run_task(task, lambda: timed, options, Distributed())
        elapsed = time.perf_counter() - start
        return elapsed, sum(in_generate), [a["text"] for a in read_answers(out / "answers.jsonl")]

    one_run(max(batch_sizes), "warmup")
    results, reference = [], None
    for batch_size in batch_sizes:
        runs = []
        for repeat in range(repeats):
            elapsed, generating, texts = one_run(batch_size, f"bs{batch_size}-{repeat}")
            runs.append((elapsed, generating))
            reference = reference or texts
            if dtype == "float32":  # in half precision padding may flip a near-tie; counted below
                assert texts == reference, f"batch size {batch_size} changed the answers"
        best, best_generating = min(runs)
        median = statistics.median(r[0] for r in runs)
        results.append(
            {
                "batch_size": batch_size,
                "questions": len(texts),
                "run_seconds_min": round(best, 3),
                "run_seconds_median": round(median, 3),
                "generate_seconds_in_fastest_run": round(best_generating, 3),
                "answers_per_s_best": round(len(texts) / best, 1),
                "answers_per_s_median": round(len(texts) / median, 1),
                "answers_same_as_first_batch_size": sum(a == b for a, b in zip(texts, reference)) / len(texts),
            }
        )
    return results


def bench_scoring(root: Path) -> list[dict]:
    """Scorer time on answer files the size of the released benchmarks (random answers)."""
    from mof_llava.benchmarks import mmbench, pope, synthetic

    rng = random.Random(0)
    rows = []
    # POPE: 3 x 3000 questions, LLaVA-style question file and answers
    coco = root / "score_pope"
    synthetic.write_pope(coco, per_split=1)
    for split in pope.SPLITS:
        lines = [
            {
                "question_id": i,
                "image": f"COCO_val2014_{i:012d}.jpg",
                "text": "Is there a dog in the image?",
                "label": "yes" if i % 2 else "no",
            }
            for i in range(1, 3001)
        ]
        (coco / "coco" / f"coco_pope_{split}.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (coco / pope.LLAVA_QUESTION_FILE).unlink()
    answers = coco / "answers.jsonl"
    with open(answers, "w") as handle:
        for split in pope.SPLITS:
            for i in range(1, 3001):
                qid = i + pope.LLAVA_ID_OFFSETS[split]
                handle.write(
                    json.dumps({"question_id": qid, "prompt": "", "text": rng.choice(["Yes", "No"])}) + "\n"
                )
    start = time.perf_counter()
    pope.score_answer_file(answers, pope.load_pope(coco / "coco"))
    rows.append({"benchmark": "pope", "answers": 9000, "seconds": round(time.perf_counter() - start, 3)})

    # MMBench: 1176 questions with 4 circular rows each (images left out: scoring does not read them)
    tsv = synthetic.write_mmbench(root / "score_mmbench" / "small.tsv", questions=3)
    import pandas as pd

    base = pd.read_csv(tsv, sep="\t")
    template = base[base["index"] % 1_000_000 == 3]  # a 4-option group
    frames = []
    for q in range(1, 1177):
        group = template.copy()
        group["index"] = group["index"] - 3 + q
        frames.append(group.drop(columns=["image"]))
    big = root / "score_mmbench" / "dev.tsv"
    pd.concat(frames).to_csv(big, sep="\t", index=False)
    answers = root / "score_mmbench" / "answers.jsonl"
    with open(answers, "w") as handle:
        for index in pd.concat(frames)["index"]:
            handle.write(
                json.dumps({"question_id": int(index), "prompt": "", "text": rng.choice("ABCD")}) + "\n"
            )
    start = time.perf_counter()
    rows_tsv = mmbench.read_tsv(big)
    mmbench.score_answer_file(answers, rows_tsv)
    rows.append(
        {"benchmark": "mmbench", "answers": len(rows_tsv), "seconds": round(time.perf_counter() - start, 3)}
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--batch-sizes", default="1,4,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--model", type=Path, default=None,
        help="a saved mof-llava model folder (e.g. one converted with `mof-llava convert`); default: the tiny I-MoF model",
    )
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: float32, bfloat16 with --model on a GPU)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per batch size (min and median reported)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: stable timings on a shared machine)"
    )
    args = parser.parse_args()

    import torch

    from mof_llava.benchmarks.generation import pick_device

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = args.dtype or ("bfloat16" if args.model is not None and device.startswith("cuda") else "float32")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        report = {
            "machine": _machine(),
            "device": device,
            "model": str(args.model) if args.model is not None else "tiny I-MoF (random weights)",
            "dtype": dtype,
            "max_new_tokens": args.max_new_tokens,
            "generation": bench_generation(
                root,
                args.questions,
                [int(b) for b in args.batch_sizes.split(",")],
                args.max_new_tokens,
                device,
                args.repeats,
                args.model,
                dtype,
            ),
            "scoring": bench_scoring(root),
        }
        report["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
