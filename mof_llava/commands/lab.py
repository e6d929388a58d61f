"""`mof-llava lab`: the toy lab (docs/toy-lab.md).

`lab towers --output DIR` trains a toy CLIP on the world's captions and a toy DINOv2 by
self-distillation into DIR/clip and DIR/ssl (resumable: run it again to continue); `lab measure
DIR...` prints, per attribute, how different pairs look to each tower and what linear
probes read, as JSON; `lab mine DIR` mines pairs of lab scenes with DIR's towers and reads what
they differ in, and scores the toy CLIP on a toy MMVP-VLM; `lab run --out DIR` trains and evaluates
the MLLM variants on the towers; `lab lion` and `lab bpo` add LION's tag prompt and BPO to a lab
run's models. Each action's parser is its own function below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("lab", help="the toy lab: train toy towers, measure what they see, run the MLLMs on them",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    actions = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    for add in (_towers_parser, _measure_parser, _run_parser, _mine_parser, _lion_parser, _bpo_parser):
        add(actions)


def _towers_parser(actions) -> None:
    towers = actions.add_parser("towers", help="train the toy CLIP and self-supervised towers (resumable)")
    towers.add_argument("--output", type=Path, required=True, help="folder for <tower>/ checkpoints")
    towers.add_argument("--seed", type=int, default=0)
    towers.add_argument(
        "--tower", action="append", choices=("clip", "ssl"), help="train only this (repeatable)"
    )
    towers.add_argument("--clip-steps", type=int, help="default: the lab's (see docs/toy-lab.md)")
    towers.add_argument("--ssl-steps", type=int)
    towers.add_argument("--batch", type=int)
    towers.add_argument(
        "--ssl-colour-jitter", type=float, help="share of SSL views with shuffled colour channels (default 0)"
    )
    towers.add_argument(
        "--clip-shape-pairs", type=float, help="share of each CLIP batch in shape pairs, hard negatives (default 0)"
    )
    towers.add_argument(
        "--ssl-pixel-weight", type=float, help="weight of the SSL tower's own-patch pixel term (default 0: off)"
    )
    towers.add_argument("--checkpoint-every", type=int, help="steps between resumable states")
    towers.add_argument("--threads", type=int, help="torch CPU threads (default: mof_llava.threads' choice)")
    towers.add_argument("--quiet", action="store_true", help="no progress lines")
    towers.set_defaults(func=run_towers)


def _measure_parser(actions) -> None:
    measure = actions.add_parser(
        "measure", help="pair distances, linear and attentive-reader probes per attribute, as JSON"
    )
    measure.add_argument("towers", type=Path, nargs="+", help="`lab towers` output folders (one per seed)")
    measure.add_argument(
        "--seed", type=int, help="seed of the measured scenes (default: each folder's tower seed)"
    )
    measure.add_argument(
        "--reader-steps", type=int, help="attentive-reader probe training steps (default 400; 0: leave it out)"
    )
    measure.add_argument("--out", type=Path, help="also write the JSON (a list, one entry per folder) here")
    measure.add_argument(
        "--markdown", action="store_true", help="print Markdown tables (mean ± half range) instead"
    )
    measure.set_defaults(func=run_measure)


def _run_parser(actions) -> None:
    run = actions.add_parser(
        "run", help="train and evaluate the MLLM variants on the toy towers, print the table"
    )
    run.add_argument(
        "--out", type=Path, required=True, help="output folder (resumable: run again to continue)"
    )
    run.add_argument(
        "--towers",
        type=Path,
        help="a `lab towers` folder (default: assets/toy-lab/seed0, or $MOF_LLAVA_TOY_TOWERS)",
    )
    run.add_argument("--seed", type=int, help="seed of the data, the LLM and the first training run")
    run.add_argument("--seeds", type=int, help="training seeds per variant")
    run.add_argument("--first-train-seed", type=int,
                     help="first training seed (default: --seed); to run one sweep's seeds in separate folders at once")  # fmt: skip
    run.add_argument("--init-seed", type=int,
                     help="every run's first adapter weights from this seed; the training seeds then only order the data")  # fmt: skip
    run.add_argument("--data-seed", type=int,
                     help="every run's data order from this seed; the training seeds then only draw the first weights")  # fmt: skip
    run.add_argument("--variant", action="append",
                     help="llava-1.5, i-mof, a-mof-<alpha>, or one tower twice: i-mof-clip-clip, "
                          "i-mof-dinov2-dinov2 (repeatable)")  # fmt: skip
    run.add_argument("--samples", type=int, help="pictures per training stage")
    run.add_argument("--epochs", type=float)
    run.add_argument("--language-steps", type=int)
    run.add_argument("--letter-share", type=float, help="stage-2 rounds in the letter format (default 0.25)")
    run.add_argument("--captioned-share", type=float, help="stage-2 records asking only colour or shape")
    run.add_argument("--colour-prior", type=float, help="share of training circles redrawn red (default 0)")
    run.add_argument("--llm-hidden-size", type=int, help="the tiny Llama's width (default 64)")
    run.add_argument("--heldout-pairs", type=int,
                     help="held-out pairs, cycling through the attributes (default 2700; 270 before the eighth round)")  # fmt: skip
    run.add_argument("--tokenizer", choices=("world", "generic"),
                     help="world (default): BPE also learns the data's text; generic: the project's tiny tokenizer")  # fmt: skip
    run.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    run.add_argument("--quiet", action="store_true", help="no progress bars (the step lines stay)")
    run.set_defaults(func=run_mllm)


def _mine_parser(actions) -> None:
    mine = actions.add_parser(
        "mine", help="mine pairs of lab scenes with the toy towers and score the toy CLIP on MMVP-VLM"
    )
    mine.add_argument("towers", type=Path, help="a `lab towers` folder (clip/, ssl/)")
    mine.add_argument("--out", type=Path, required=True, help="output folder (pool, embeddings reused)")
    mine.add_argument("--pool", type=int, help="pictures mined (default 2000)")
    mine.add_argument("--seed", type=int, help="seed of the scenes (default: the towers' seed)")
    mine.add_argument("--clip-quantile", type=float, help="CLIP cos above this random-pair quantile (0.99)")
    mine.add_argument("--ssl-quantile", type=float, help="SSL cos below this random-pair quantile (0.5)")
    mine.add_argument("--vlm-pairs", type=int, help="MMVP-VLM pairs per attribute (default 20)")
    mine.set_defaults(func=run_mine)


def _lion_parser(actions) -> None:
    lion = actions.add_parser("lion", help="LION on a lab run: with and without tags (--arm aggregator: the aggregator)")
    lion.add_argument("--out", type=Path, required=True, help="output folder (resumable: run again to continue)")
    lion.add_argument("--lab", type=Path, required=True, help="a `lab run` folder (read only)")
    lion.add_argument("--variant", help="the lab variant (default llava-1.5)")
    lion.add_argument("--seed", type=int, action="append", help="training seed (repeatable; default 0)")
    lion.add_argument("--top-k", type=int, help="tags per picture (default 2)")
    lion.add_argument("--dropout", type=float, help="data.tag_prompt dropout (default 0.1)")
    lion.add_argument(
        "--arm",
        choices=("tags", "aggregator"),
        help="tags: the tag prompt in stage 2 (default); aggregator: the stages with mixer.aggregator",
    )
    lion.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    lion.add_argument("--quiet", action="store_true", help="no progress bars (the step lines stay)")
    lion.set_defaults(func=run_lion)


def _bpo_parser(actions) -> None:
    bpo = actions.add_parser("bpo", help="BPO on a lab model: negatives, the preference stage, held-out scores before and after")
    bpo.add_argument("--model", type=Path, required=True, help="a lab stage-2 model (OUT/<variant>/stage2/model)")
    bpo.add_argument("--data", type=Path, required=True, help="that `lab run`'s data folder (read only)")
    bpo.add_argument("--out", type=Path, required=True, help="output folder (resumable: run again to continue)")
    bpo.add_argument("--seed", type=int, help="negatives and training seed (default 0)")
    bpo.add_argument("--records", type=int, help="stage-2 records whose short-answer rounds seed pairs (default 150)")
    bpo.add_argument("--neg-type", action="append", choices=("mllm-hal", "llm-hal"),
                     help="negative kind (repeatable; default mllm-hal; llm-hal uses the rule rewriter)")
    bpo.add_argument("--negative-picture", choices=("own", "grey"),
                     help="the negatives' picture: the record's, weakened (default), or the grey one (the text prior)")
    bpo.add_argument("--corruption", choices=("noise", "blur", "mask", "crop"),
                     help="how the negatives' picture is weakened (default noise, BPO's t = 900)")
    bpo.add_argument("--mask-ratio", type=float, help="--corruption mask: share of cells masked (1: a blank picture)")
    bpo.add_argument("--weaken-tower", choices=("both", "clip", "dinov2"),
                     help="the tower whose input the negatives weaken (default both)")
    bpo.add_argument("--temperature", type=float, help="the negatives' sampling temperature (default 0.2; 0: greedy)")
    bpo.add_argument("--nll-weight", type=float, help="times the chosen answers' NLL (default 0, BPO's loss)")
    bpo.add_argument("--learning-rate", type=float, help="preference-stage learning rate (default 2e-4)")
    bpo.add_argument("--epochs", type=float, help="preference-stage epochs (default 4)")
    bpo.add_argument("--threads", type=int, help="torch CPU threads (default 1)")
    bpo.add_argument("--quiet", action="store_true", help="no progress bars (the step lines stay)")
    bpo.set_defaults(func=run_bpo)


def run_towers(args: argparse.Namespace) -> int:
    from ..lab.towers import TowersConfig, train_towers
    from ..threads import choose_cpu_threads

    given = {"clip_steps": args.clip_steps, "ssl_steps": args.ssl_steps, "batch": args.batch,
             "checkpoint_every": args.checkpoint_every, "ssl_colour_jitter": args.ssl_colour_jitter,
             "ssl_pixel_weight": args.ssl_pixel_weight, "clip_shape_pairs": args.clip_shape_pairs}  # fmt: skip
    threads = choose_cpu_threads(args.threads, "--threads").threads
    config = TowersConfig(output=str(args.output), seed=args.seed, towers=tuple(args.tower or ("clip", "ssl")),
                          threads=threads, progress=not args.quiet,
                          **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    for name, result in train_towers(config).items():
        print(f"{name}: {result.path} ({result.steps} steps, resumed at {result.resumed_from}, "
              f"loss {result.final_loss:.4f}, model.safetensors sha256 {result.sha256})")  # fmt: skip
    return 0


def run_measure(args: argparse.Namespace) -> int:
    from ..lab.measure import MeasureConfig, measure
    from ..lab.report import report
    from ..lab.towers import INFO_FILE, LabError
    from ..threads import apply_cpu_threads

    apply_cpu_threads(None, "OMP_NUM_THREADS")
    results = []
    for folder in args.towers:
        missing = [t for t in ("clip", "ssl") if not (folder / t / INFO_FILE).is_file()]
        if missing:
            raise LabError(
                f"{folder}: no trained {' or '.join(missing)} tower there (run `mof-llava lab towers`)"
            )
        seed = (
            args.seed
            if args.seed is not None
            else json.loads((folder / "clip" / INFO_FILE).read_text())["seed"]
        )
        steps = {} if args.reader_steps is None else {"reader_steps": args.reader_steps}
        result = measure(str(folder / "clip"), str(folder / "ssl"), MeasureConfig(seed=seed, **steps))
        results.append({"towers": str(folder), "seed": seed, **result})
    text = json.dumps(results, indent=1)
    if args.out is not None:
        args.out.write_text(text + "\n")
    sys.stdout.write(report(results) if args.markdown else text + "\n")
    return 0


def run_mllm(args: argparse.Namespace) -> int:
    from ..lab.mllm import LabConfig, run_lab, table

    given = {"towers": None if args.towers is None else str(args.towers), "seed": args.seed,
             "seeds": args.seeds, "first_train_seed": args.first_train_seed,
             "init_seed": args.init_seed, "data_seed": args.data_seed,
             "variants": tuple(args.variant) if args.variant else None,
             "samples": args.samples, "epochs": args.epochs, "language_steps": args.language_steps,
             "letter_share": args.letter_share, "captioned_share": args.captioned_share,
             "colour_prior": args.colour_prior, "llm_hidden_size": args.llm_hidden_size,
             "heldout_pairs": args.heldout_pairs, "tokenizer": args.tokenizer, "threads": args.threads}  # fmt: skip
    config = LabConfig(
        out=str(args.out), progress=not args.quiet, **{k: v for k, v in given.items() if v is not None}
    )
    result = run_lab(config, say=lambda line: print(line, file=sys.stderr, flush=True))
    sys.stdout.write(table(result.runs))
    return 0


def run_lion(args: argparse.Namespace) -> int:
    from ..lab.lion import LabLionConfig, lab_lion, table

    given = {"variant": args.variant, "seeds": tuple(args.seed) if args.seed else None, "top_k": args.top_k,
             "dropout": args.dropout, "arm": args.arm, "threads": args.threads}  # fmt: skip
    config = LabLionConfig(out=str(args.out), lab=str(args.lab), progress=not args.quiet,
                           **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    sys.stdout.write(table(lab_lion(config, say=lambda line: print(line, file=sys.stderr, flush=True))))
    return 0


def run_bpo(args: argparse.Namespace) -> int:
    from ..lab.bpo import LabBpoConfig, lab_bpo, table

    given = {"seed": args.seed, "records": args.records, "neg_types": tuple(args.neg_type) if args.neg_type else None,
             "negative_picture": args.negative_picture, "corruption": args.corruption,
             "mask_ratio": args.mask_ratio, "weaken_tower": args.weaken_tower, "temperature": args.temperature,
             "nll_weight": args.nll_weight, "learning_rate": args.learning_rate, "epochs": args.epochs,
             "threads": args.threads}  # fmt: skip
    config = LabBpoConfig(model=str(args.model), data=str(args.data), out=str(args.out), progress=not args.quiet,
                          **{k: v for k, v in given.items() if v is not None})  # fmt: skip
    sys.stdout.write(table([lab_bpo(config, say=lambda line: print(line, file=sys.stderr, flush=True))]))
    return 0


def run_mine(args: argparse.Namespace) -> int:
    from ..lab.mining import LabMineConfig, lab_mine

    given = {"pool": args.pool, "seed": args.seed, "clip_quantile": args.clip_quantile,
             "ssl_quantile": args.ssl_quantile, "vlm_pairs": args.vlm_pairs}  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    config = LabMineConfig(towers=str(args.towers), out=str(args.out), **given)
    result = lab_mine(config, say=lambda line: print(line, file=sys.stderr, flush=True))
    sys.stdout.write(json.dumps({k: v for k, v in result.items() if k != "config"}, indent=1) + "\n")
    return 0
