"""`mof-llava demo --sweep`: a CPU rehearsal of the paper's whole path on the demo's tiny models.

A miniature of `configs/experiments/sweeps/paper.yaml`: LLaVA-1.5, A-MoF at alpha 0, 0.5 and 1,
and I-MoF trained with two seeds, each through stage 1 and stage 2 (`run_demo`); every model
evaluated on the demo's MMVP-format pairs and on small POPE, MMBench and GQA folders in the real
formats, through the call a sweep's job script makes with `mof-llava eval run` (`evaluate`); then
the tables and figures through `mof-llava tables`' code. What it proves is that the pipeline runs end to end and
what its outputs look like: at this size the scores are near chance and say nothing about the
paper's findings.

    OUT/ (the demo's folder, see run.py)
      data/eval/pope/  data/eval/mmbench_dev.tsv  data/eval/gqa/   the extra benchmark folders
      <variant>/eval/{mmvp,pope,mmbench,gqa}/                      answers.jsonl, metrics.json
      tables/                                                      what `mof-llava tables OUT` writes
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .run import I_MOF, LLAVA_15, DemoResult, DemoSettings, a_mof, run_demo, with_seed, write_run_record

REHEARSAL_VARIANTS = (LLAVA_15, a_mof(0), a_mof(0.5), a_mof(1), I_MOF, with_seed(I_MOF, 1))
EXTRA_BENCHMARKS = ("pope", "mmbench", "gqa")


@dataclass
class Rehearsal:
    demo: DemoResult
    tables_dir: Path
    report: object  # mof_llava.experiments.report.Report


def benchmark_data(data_dir: Path) -> dict[str, Path]:
    """The small POPE / MMBench / GQA inputs, written once (they are a function of nothing)."""
    from ..benchmarks import synthetic

    root = data_dir / "eval"
    paths = {"pope": root / "pope", "mmbench": root / "mmbench_dev.tsv", "gqa": root / "gqa"}
    if not paths["pope"].is_dir():
        synthetic.write_pope(paths["pope"], per_split=4)
    if not paths["mmbench"].is_file():
        synthetic.write_mmbench(paths["mmbench"], questions=3)
    if not paths["gqa"].is_dir():
        synthetic.write_gqa(paths["gqa"], questions=6)
    return paths


def run_rehearsal(out_dir: str | Path, settings: DemoSettings | None = None) -> Rehearsal:
    from ..experiments.report import write_report

    settings = settings or DemoSettings()
    demo = run_demo(out_dir, settings, REHEARSAL_VARIANTS, evaluate=True)
    data = benchmark_data(demo.data_dir)
    benchmarks = ["mmvp", *EXTRA_BENCHMARKS]
    for variant in demo.variants:
        folder = variant.stage2.output_dir.parent
        for bench in EXTRA_BENCHMARKS:
            # what a sweep's job script runs for this step (a finished one re-scores without the model)
            model, out = variant.stage2.artifact, folder / "eval" / bench
            evaluate_step(bench, data[bench], model, out, variant.variant.name, settings)
        write_run_record(folder, variant.variant, settings, benchmarks)
    tables_dir = demo.out_dir / "tables"
    report = write_report(
        [demo.out_dir], tables_dir, patterns=demo.data_dir / "mmvp_patterns.csv", proxy="mmbench"
    )
    return Rehearsal(demo, tables_dir, report)


def evaluate_step(
    bench: str, data: Path, model: Path, output_dir: Path, model_id: str, settings: DemoSettings
):
    """`mof-llava eval run BENCH` for one rehearsal model, as the library call it is."""
    from ..benchmarks import registry
    from ..benchmarks.evaluate import EvalConfig, evaluate

    config = EvalConfig(
        benchmark=bench,
        options=registry.get(bench).options(data=data),
        model=model,
        output_dir=output_dir,
        model_id=model_id,
        device="cpu",
        batch_size=settings.eval_batch_size,
        no_progress=True,
        threads=settings.threads or None,
        max_new_tokens=settings.max_new_tokens or None,
    )
    return evaluate(config)
