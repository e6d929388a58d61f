"""The lab's MLLM runs: LLaVA-1.5, I-MoF and A-MoF trained on the toy towers through the library.

    run_lab(LabConfig(out="lab-runs", towers="assets/toy-lab/seed0"))

1. Data from lab-world scenes (`mllm_data`): captions for stage 1, questions about every attribute
   for stage 2, the toy MMVP and a held-out question set, in the demo's folder layout.
2. A tiny Llama pre-trained on the data's text by the demo's `pretrain_language_model`.
3. Per variant, stage 1 and stage 2 through `mof_llava.training.run.train` from run configs written
   by the demo's `write_run_configs` (the toy CLIP as the `clip` tower, the toy SSL tower as
   `dinov2`; layers -2 and -1 as for the real towers), then the MMVP runner on the toy MMVP
   (`demo.run.evaluate_mmvp`, letter answers: pair accuracy per attribute) and the GQA runner on
   the held-out set (`benchmarks.evaluate`, short answers: question accuracy per attribute).

    OUT/lab_mllm.json          settings, finished steps, scores (rewritten after every step)
    OUT/data/  OUT/components/  OUT/cache/  OUT/<variant>/{stage1,stage2,eval/mmvp,eval/heldout}

Running it again into the same folder with the same settings skips what is finished.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ..atomic import write_text_atomic
from ..demo.run import I_MOF, LLAVA_15, Components, DemoSettings, Variant, a_mof, with_seed
from ..scenes import questions
from . import world

MANIFEST = "lab_mllm.json"
VARIANTS = (LLAVA_15, I_MOF, a_mof(0), a_mof(0.5), a_mof(1))


class LabRunError(ValueError):
    """The output folder holds something the lab must not overwrite or mix with."""


@dataclass(frozen=True)
class LabConfig:
    out: str
    towers: str | None = None  # a `lab towers` folder (clip/, ssl/); None: the committed ones (mof_llava.toy_towers)
    seed: int = 0  # data, LLM and the first training seed
    seeds: int = 1  # training seeds per variant (seed, seed + 1, ...)
    # The first training seed, when not `seed`: one sweep's seeds can then run at once in separate
    # folders (same data and LLM, so `mof-llava tables` pools them); None: `seed`.
    first_train_seed: int | None = None
    # Fix one half of what a training seed decides while the seeds vary the other: `init_seed` draws
    # every run's first adapter weights (the seeds then order the data), `data_seed` orders every
    # run's data (the seeds then draw the weights). None: the training seed decides both.
    init_seed: int | None = None
    data_seed: int | None = None
    variants: tuple[str, ...] = tuple(v.name for v in VARIANTS)
    samples: int = 1800  # pictures per training stage
    # 1800 x 4 (452 stage-2 steps, about 5 min per variant) is the smallest run that learns colour;
    # 3600 x 8 with llm_hidden_size 128 reaches 90 % (docs/toy-lab.md, "Fifth round", "Sixth round").
    epochs: float = 4.0
    # Stage-2 rounds in the letter format, the rest short answers: short answers teach colour within
    # a few hundred steps, letters need more (docs/toy-lab.md, "The floor, through short answers").
    letter_share: float = 0.25
    captioned_share: float = 0.0  # stage-2 records that ask only their colour or shape question
    colour_prior: float = 0.0  # training circles redrawn red with this probability (mllm_data)
    batch_size: int = 16
    stage1_learning_rate: float = 1e-2
    stage2_learning_rate: float = 1e-3
    language_steps: int = 300
    llm_hidden_size: int = 64
    # "world": the tiny Llama's BPE also learns the data's text, so every answer word and both
    # option letters are one token each, as in Llama's vocabulary ("generic" split "B" as "▁", "B"
    # and "outlined" into seven pieces; docs/toy-lab.md).
    tokenizer: Literal["world", "generic"] = "world"
    mmvp_pairs: int = 153  # 17 per attribute
    # 300 pairs per attribute (600 questions): a run's binomial error is then about 2 points. 270
    # pairs (60 questions, about 6.5 points, the same for every seed) read I-MoF's fill gain as 5
    # points instead of 11 (docs/toy-lab.md, "Eighth round").
    heldout_pairs: int = 2700
    threads: int | None = 1
    progress: bool = True

    def settings(self) -> DemoSettings:
        """The demo's settings for the run-config writer and the evaluation."""
        return DemoSettings(
            seed=self.seed, samples=self.samples, batch_size=self.batch_size, stage1_epochs=self.epochs,
            stage2_epochs=self.epochs, stage1_learning_rate=self.stage1_learning_rate,
            stage2_learning_rate=self.stage2_learning_rate, language_steps=self.language_steps,
            llm_hidden_size=self.llm_hidden_size,
            threads=self.threads, progress=self.progress, mmvp_pairs=self.mmvp_pairs,
        )  # fmt: skip


# Vocabulary per `LabConfig.tokenizer`: at 768 the world's text (`tokenizer_corpus`) makes every
# answer word and letter one token (tests/lab/test_lab_mllm_data.py); "generic" is the tests' tokenizer.
TOKENIZER_VOCAB = {"world": 768, "generic": 512}


def tokenizer_corpus(texts: Sequence[str]) -> list[str]:
    """The world's text for the tokenizer's merges, and a line of its answer words and option letters
    repeated often enough that each becomes one token however little text there is."""
    words = sorted({w for a in world.ATTRIBUTES for w in questions.answer_values(a)} | {"A", "B"})
    return [*texts, *[" ".join(words)] * 100]


@dataclass
class VariantScores:
    name: str
    row: str  # the variant without its seed
    seed: int
    mmvp: dict  # pair_accuracy, question_accuracy, per_pattern (pair accuracy per attribute)
    heldout: dict[str, float]  # short-answer question accuracy (%) per attribute on held-out scenes
    # Held-out pair accuracy (%) per attribute, MMVP's metric on short answers; None in folders
    # evaluated before it was recorded.
    heldout_pair_accuracy: dict[str, float] | None = None


@dataclass
class LabResult:
    out: Path
    runs: list[VariantScores] = field(default_factory=list)


def lab_variants(config: LabConfig) -> list[Variant]:
    from ..demo.run import parse_variant

    base = [parse_variant(name) for name in config.variants]
    first = config.seed if config.first_train_seed is None else config.first_train_seed
    seeds = [first + s for s in range(config.seeds)]
    if config.init_seed is not None and config.data_seed is not None:
        raise LabRunError("init_seed and data_seed are both fixed: the training seeds would then vary nothing")
    if config.init_seed is not None:
        return [with_seed(v, config.init_seed, data_seed=s) for s in seeds for v in base]
    return [with_seed(v, s, data_seed=config.data_seed) for s in seeds for v in base]


def run_lab(config: LabConfig, say: Callable[[str], None] = print) -> LabResult:
    """Data, LLM, then each variant's two stages and evaluations (see the module docstring)."""
    import torch

    from ..threads import apply_cpu_threads

    variants = lab_variants(config)  # a misspelt name fails before any work
    out = Path(config.out).resolve()
    manifest = _open_manifest(out, config)
    threads = torch.get_num_threads()
    apply_cpu_threads(config.threads, "threads")
    try:
        components = _prepare(out, config, manifest, say)
        for variant in variants:  # all training first: a long sweep's models are kept if evaluation fails
            _train_variant(out, variant, config, components, manifest, say)
        result = LabResult(out, [_evaluate_variant(out, v, config, manifest, say) for v in variants])
    finally:
        torch.set_num_threads(threads)
    return result


def tower_folder(config: LabConfig) -> Path:
    from ..toy_towers import toy_towers

    if config.towers is None:
        return toy_towers(0).root.resolve()
    towers = Path(config.towers).resolve()
    missing = [t for t in ("clip", "ssl") if not (towers / t / "config.json").is_file()]
    if missing:
        raise LabRunError(f"{towers}: no {' or '.join(missing)} tower there (run `mof-llava lab towers`)")
    return towers


def _prepare(out: Path, config: LabConfig, manifest: dict, say) -> Components:
    from ..demo.language import pretrain_language_model, training_texts
    from ..demo.synthetic import dataset_paths
    from ..testing.tiny import save_tiny_checkpoints
    from .mllm_data import write_lab_data

    towers = tower_folder(config)
    root = out / "components"
    components = Components(root, root / "llm-text", towers / "clip", towers / "ssl", (0.0, 0.0))
    data = dataset_paths(out / "data")
    if "data" not in manifest["finished"]:
        say(f"data: {config.samples} pictures per stage, {config.mmvp_pairs} toy MMVP pairs, "
            f"{config.heldout_pairs} held-out pairs")  # fmt: skip
        write_lab_data(
            data.root, config.seed, config.samples, config.mmvp_pairs, config.heldout_pairs, towers,
            config.letter_share, config.captioned_share, config.colour_prior,
        )  # fmt: skip
        _finish(out, manifest, "data")
    if "language" not in manifest["finished"]:
        say(f"language pre-training of the tiny Llama: {config.language_steps} steps")
        texts = training_texts(data.pretrain_file, data.instruct_file)
        world_text = tokenizer_corpus(texts) if config.tokenizer == "world" else ()
        tiny = save_tiny_checkpoints(root, llm_hidden_size=config.settings().llm_hidden_size, seed=config.seed,
                                     vocab_size=TOKENIZER_VOCAB[config.tokenizer], tokenizer_corpus=world_text)  # fmt: skip
        losses = pretrain_language_model(tiny.llm, components.llm, texts, config.language_steps,
                                          config.settings().language_learning_rate, seed=config.seed,
                                          progress=config.progress)  # fmt: skip
        manifest["language_loss"] = [losses[0], losses[-1]]
        _finish(out, manifest, "language")
    return components


def _train_variant(
    out: Path, variant: Variant, config: LabConfig, components: Components, manifest: dict, say
):
    from ..demo.run import write_run_configs
    from ..training.config import load_run_config
    from ..training.run import finish_distributed, train

    folder = out / variant.name
    configs = write_run_configs(folder, variant, config.settings(), out / "data", components, out / "cache")
    for stage, path in zip(("stage1", "stage2"), configs):
        if f"{variant.name}/{stage}" not in manifest["finished"]:
            say(f"{variant.name}: {stage}")
            try:
                train(load_run_config(path), progress=config.progress)
            finally:
                finish_distributed()
            _finish(out, manifest, f"{variant.name}/{stage}")


def _evaluate_variant(out: Path, variant: Variant, config: LabConfig, manifest: dict, say) -> VariantScores:
    from ..demo.run import evaluate_mmvp, write_run_record

    folder, settings = out / variant.name, config.settings()
    model = folder / "stage2" / "model"
    scores = manifest.setdefault("scores", {})
    if variant.name not in scores:
        say(f"{variant.name}: evaluation")
        mmvp = evaluate_mmvp(model, out / "data", folder / "eval" / "mmvp", variant.name, settings)
        mmvp["question_accuracy_per_attribute"] = question_accuracy(
            folder / "eval" / "mmvp" / "metrics.json", out / "data" / "mmvp_patterns.csv"
        )
        heldout = heldout_accuracy(model, out / "data" / "heldout", folder / "eval" / "heldout", config)
        scores[variant.name] = {
            "row": variant.row,
            "seed": variant.train_seed,
            "data_seed": variant.data_seed,  # None: the seed ordered the data
            "mmvp": mmvp,
            "heldout": heldout,
            "heldout_pair_accuracy": pair_accuracy(
                folder / "eval" / "heldout" / "metrics.json", out / "data" / "heldout"
            ),
        }
        _finish(out, manifest, f"{variant.name}/eval")
    # A run record makes the variant folder a sweep run for `mof-llava tables` (rows by variant,
    # seeds pooled); the held-out set's folder is eval/heldout.
    write_run_record(folder, variant, settings, ["mmvp", "heldout"], sweep="lab")
    entry = scores[variant.name]
    return VariantScores(variant.name, entry["row"], entry["seed"], entry["mmvp"], entry["heldout"],
                         entry.get("heldout_pair_accuracy"))  # fmt: skip


def heldout_accuracy(
    model: Path, data: Path, output_dir: Path, config: LabConfig, tags_file: Path | None = None
) -> dict[str, float]:
    """Short-answer accuracy (%) per attribute on the held-out GQA folder, through the GQA runner
    (exact match after LLaVA's normalisation; `mllm_data.write_heldout` makes the attribute each
    question's semantic type). `tags_file`: the images' tags, for a model with LION's tag prompt."""
    from ..benchmarks.evaluate import EvalConfig, evaluate
    from ..benchmarks.gqa import GqaOptions

    result = evaluate(EvalConfig(benchmark="gqa", options=GqaOptions(data=data), model=model,
                                 output_dir=output_dir, dtype="float32", device="cpu", threads=config.threads,
                                 no_progress=not config.progress, tags_file=tags_file))  # fmt: skip
    by_type = result.metrics["per_semantic_type"]
    return {a: by_type[a]["accuracy"] for a in world.ATTRIBUTES if a in by_type}


def pair_accuracy(metrics_file: Path, data: Path) -> dict[str, float]:
    """Per attribute, MMVP's pair accuracy (%) on the held-out short answers: from the GQA metrics'
    `per_question` and the folder's questions file, where `mllm_data.write_heldout` names pair k's
    questions <k>a and <k>b (MMVP's questions 2k + 1 and 2k + 2)."""
    from ..benchmarks import mmvp
    from ..benchmarks.gqa import OFFICIAL_QUESTIONS

    correct = json.loads(metrics_file.read_text())["per_question"]
    gold = json.loads((data / OFFICIAL_QUESTIONS).read_text())
    by: dict[str, dict[int, bool]] = {}
    for qid, question in gold.items():
        index = 2 * int(qid[:-1]) + (1 if qid.endswith("a") else 2)
        by.setdefault(question["types"]["semantic"], {})[index] = correct[qid]
    return {a: mmvp.pair_accuracy(by[a])[0] for a in world.ATTRIBUTES if a in by}


def cue_following(answers_file: Path, data: Path, attribute: str, cues: Sequence[str]) -> tuple[float, int]:
    """How far the held-out answers about `attribute` follow a word of the question instead of the
    picture: grouping them by the one cue word each question names (e.g. its colour, `world.COLOURS`),
    the share (%) that equal their group's most common answer, and how many answers were grouped
    (questions naming no cue or several are left out). A model that reads the picture scores near
    the attribute's balance (a few points above 50 on a two-valued one, from the groups' noise);
    one that answers from the cue scores up to 100."""
    from ..benchmarks.gqa import OFFICIAL_QUESTIONS

    gold = json.loads((data / OFFICIAL_QUESTIONS).read_text())
    groups: dict[str, list[str]] = {}
    for line in answers_file.read_text().splitlines():
        answer = json.loads(line)
        question = gold.get(answer["question_id"])
        if question is None:
            raise ValueError(f"{answers_file}: question {answer['question_id']!r} is not in {data / OFFICIAL_QUESTIONS}")
        named = [c for c in cues if re.search(rf"\b{re.escape(c)}\b", question["question"])]
        if question["types"]["semantic"] == attribute and len(named) == 1:
            groups.setdefault(named[0], []).append(answer["text"].strip().lower())
    grouped = sum(len(g) for g in groups.values())
    if not grouped:
        raise ValueError(f"{answers_file}: no {attribute} question names exactly one of {list(cues)}")
    followed = sum(max(g.count(a) for a in set(g)) for g in groups.values())
    return 100.0 * followed / grouped, grouped


def question_accuracy(metrics_file: Path, patterns_file: Path) -> dict[str, float]:
    """Per-attribute question accuracy (%) from an MMVP metrics file and its pattern map."""
    from ..benchmarks.analysis import mmvp_correctness, read_pattern_map

    correct = mmvp_correctness(json.loads(metrics_file.read_text()), str(metrics_file))
    patterns = read_pattern_map(patterns_file)
    by: dict[str, list[bool]] = {}
    for index, ok in correct.items():
        by.setdefault(attribute_of(patterns[index]), []).append(ok)
    return {a: 100.0 * sum(by[a]) / len(by[a]) for a in world.ATTRIBUTES if a in by}


def attribute_of(pattern: str) -> str:
    """The attribute a pattern-map name stands for: the map holds attribute names, but the pattern
    reader turns MMVP-VLM's short names into long ones ("orientation" -> "Orientation and Direction")."""
    from ..benchmarks.analysis import canonical_pattern

    return {canonical_pattern(a): a for a in world.ATTRIBUTES}.get(pattern, pattern)


# ---------------------------------------------------------------------------------------------
# Tables


def table(runs: Sequence[VariantScores]) -> str:
    """Markdown: held-out short-answer question and pair accuracy (the pairs only when every run has
    them) and toy-MMVP pair accuracy per attribute, one column per variant, mean ± sample std over
    its seeds (n given in the header)."""
    from ..scenes.questions import answer_values

    rows = list(dict.fromkeys(r.row for r in runs))
    by_row = {row: [r for r in runs if r.row == row] for row in rows}
    head = "| attribute | " + " | ".join(f"{row} (n={len(by_row[row])})" for row in rows) + " |"
    rule = "|---" * (len(rows) + 2) + "|"
    blocks = [("Held-out short-answer accuracy (%):", lambda r: r.heldout, 1)]
    if all(r.heldout_pair_accuracy is not None for r in runs):
        blocks.append(("Held-out pair accuracy (%), both pictures of a pair right (one answer for both: 0):",
                       lambda r: r.heldout_pair_accuracy, 2))  # fmt: skip
    lines = []
    for title, scores, questions_per_item in blocks:  # chance: guessing each of the item's questions
        lines += [title, "", head[:-1] + "| chance |", rule]
        for attribute in world.ATTRIBUTES:
            cells = [mean_std([scores(r).get(attribute) for r in by_row[row]]) for row in rows]
            chance = 100 / len(answer_values(attribute)) ** questions_per_item
            lines.append(f"| {attribute} | " + " | ".join(cells) + f" | {chance:.0f} |")
        lines.append("")
    lines += ["Toy MMVP pair accuracy (%), chance 25:", "", head, "|---" * (len(rows) + 1) + "|"]
    for attribute in [*world.ATTRIBUTES, "all"]:
        cells = [mean_std([_pair_score(r, attribute) for r in by_row[row]]) for row in rows]
        lines.append(f"| {attribute} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pair_score(run: VariantScores, attribute: str) -> float | None:
    if attribute == "all":
        return run.mmvp["pair_accuracy"]  # percent
    per_attribute = {attribute_of(p): v for p, v in run.mmvp.get("per_pattern", {}).items()}
    entry = per_attribute.get(attribute)
    return None if entry is None else entry["accuracy"]


def mean_std(values: list[float | None], each: bool = False) -> str:
    """A table cell: the values' mean ± sample std, rounded to whole numbers (and with `each`, the
    values themselves in brackets); missing values (None) are left out, none at all is "-"."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return f"{values[0]:.0f}" if values else "-"
    listed = " (" + ", ".join(f"{v:.0f}" for v in values) + ")" if each else ""
    return f"{statistics.fmean(values):.0f} ± {statistics.stdev(values):.0f}{listed}"


# ---------------------------------------------------------------------------------------------
# Bookkeeping


_NOT_COMPARED = ("out", "progress", "threads", "variants", "seeds", "first_train_seed", "init_seed", "data_seed")


def _open_manifest(out: Path, config: LabConfig) -> dict:
    # Which variants and how many seeds do not change a finished step: more may join a folder later.
    settings = {k: v for k, v in asdict(config).items() if k not in _NOT_COMPARED}
    settings["towers"] = str(tower_folder(config))
    return open_manifest(out / MANIFEST, settings, LabRunError, "a lab run", added_later={"colour_prior": 0.0, "tokenizer": "generic"})


def _finish(out: Path, manifest: dict, step: str | None) -> None:
    write_manifest(out / MANIFEST, manifest, step)


def open_manifest(
    path: Path, settings: dict, error: type[Exception], what: str, added_later: dict | None = None
) -> dict:
    """A resumable lab folder's manifest (`settings`, `finished` steps): the one in `path`'s folder,
    if made with the same settings, or a new one in an empty or new folder; else `error` in one line.
    `added_later`: settings that folders made before them lack, with the value those folders ran with."""
    out = path.parent
    settings = json.loads(json.dumps(settings))  # as the file holds them (tuples are lists)
    if path.is_file():
        manifest = json.loads(path.read_text())
        saved = {**json.loads(json.dumps(added_later or {})), **manifest["settings"]}
        if saved != settings:
            changed = sorted(k for k in settings.keys() | saved.keys() if saved.get(k) != settings.get(k))
            raise error(f"{out} holds {what} with other settings ({', '.join(changed)}); "
                        "use another folder, or delete this one to start over")  # fmt: skip
        return manifest
    if out.exists() and any(out.iterdir()):
        raise error(f"{out} is not empty and holds no {path.name}; choose an empty or new folder")
    manifest = {"settings": settings, "finished": []}
    write_manifest(path, manifest, None)
    return manifest


def write_manifest(path: Path, manifest: dict, step: str | None) -> None:
    """Record `step` as finished (None: nothing new) and rewrite the manifest atomically."""
    if step is not None:
        manifest["finished"].append(step)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(manifest, indent=1) + "\n")
