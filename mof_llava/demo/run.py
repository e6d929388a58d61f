"""The demo pipeline: lab-world data -> toy towers and a tiny LLM -> stage 1 -> stage 2 -> MMVP-format evaluation.

Everything runs through the same code as a real experiment: the run configs are YAML files loaded
with `load_run_config` (so `mof-llava train OUT/i-mof/stage2.yaml` repeats a stage by hand),
training goes through `train()`, and the evaluation through the benchmark runner of
`mof-llava eval run mmvp`. Only the sizes are small. The towers are the toy lab's trained CLIP and
self-supervised towers (`assets/toy-lab/seed0`, docs/toy-lab.md), loaded like real towers; the
pictures are the toy lab's 48 px scenes they were trained on, at their resolution.

    OUT/
      demo.json              settings, the steps finished so far, losses, scores and timings
      data/                  the lab-world dataset (see synthetic.py, world LAB)
      components/            tiny random LLM (+ tokenizer), llm-text/ (after language pre-training),
                             clip/ and dinov2/ (copies of the toy towers)
      cache/                 the data pipeline's record index and token-length cache
      <variant>/             one folder per trained model, e.g. i-mof/ (a sweep run's layout)
        experiment.json        what the run is (for `mof-llava sweep status` and `mof-llava tables`)
        stage1.yaml            the stage-1 run config
        stage2.yaml            the stage-2 run config (inherits stage1.yaml, loads stage1/adapters)
        stage1/                run_config.yaml, metrics.jsonl, checkpoint-<step>/, adapters/
        stage2/                run_config.yaml, metrics.jsonl, checkpoint-<step>/, model/
        eval/mmvp/             answers.jsonl, metrics.json, run.json

`run_demo` takes several variants (mixers) at once: they share the data and the components, so a
sweep over mixers is one call. Running it again into the same folder with the same settings skips
the finished steps and resumes the others (training from its checkpoints, evaluation from its
answer file); other settings are refused.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from ..atomic import write_text_atomic
from ..model.configuration import MixerSpec
from ..model.presets import CLIP_L14_336, DINOV2_L14
from ..typed_config import check, deep_merge
from .synthetic import LAB, DatasetSizes, dataset_paths, write_dataset

logger = logging.getLogger("mof_llava.demo")

MANIFEST = "demo.json"
TOWER_SEED = 0  # the committed toy towers the demo reads (assets/toy-lab/seed0)


class DemoFolderError(ValueError):
    """The output folder holds something the demo must not overwrite or mix with."""


class UnknownVariantError(ValueError):
    """A model name `parse_variant` does not know."""


@dataclass(frozen=True)
class Variant:
    """One model the demo trains: a folder name, its mixer and the towers it uses; `train_seed` trains
    it with another seed than the demo's (the data and components stay those of the demo's seed), and
    `data_seed` orders its training data with another seed than its `train_seed`."""

    name: str
    mixer: MixerSpec
    towers: tuple[str, ...] = ("clip", "dinov2")
    train_seed: int | None = None
    data_seed: int | None = None  # None: the training seed orders the data too
    group: str = ""  # the table row it belongs to; "" = its name

    @property
    def row(self) -> str:
        return self.group or self.name

    @property
    def arm(self) -> str:
        """A-MoF variants form one line over alpha in the figures."""
        return "a-mof" if self.mixer.mode == "additive" else self.row


I_MOF = Variant("i-mof", MixerSpec(mode="interleave"))
LLAVA_15 = Variant("llava-1.5", MixerSpec(mode="none"), towers=("clip",))


TWIN = "_twin"  # the name suffix of a tower's second copy


def twin_i_mof(tower: str) -> Variant:
    """I-MoF over one tower and a copy of it (two adapters, the same features): what interleaving
    alone does to a model, a diagnostic beside I-MoF over two different towers."""
    return Variant(f"i-mof-{tower}-{tower}", MixerSpec(mode="interleave"), towers=(tower, tower + TWIN))


TWIN_I_MOFS = {v.name: v for v in (twin_i_mof("clip"), twin_i_mof("dinov2"))}


def a_mof(alpha: float) -> Variant:
    """Additive MoF with DINOv2 ratio `alpha`."""
    return Variant(f"a-mof-{alpha:g}", MixerSpec(mode="additive", alpha=float(alpha)))


def with_seed(variant: Variant, seed: int, data_seed: int | None = None) -> Variant:
    """The same model trained with seed `seed` (and its data ordered by `data_seed`, when given), in its
    own folder, in the same table row."""
    name = f"{variant.row}-seed{seed}" + ("" if data_seed is None else f"-data{data_seed}")
    return replace(variant, name=name, train_seed=seed, data_seed=data_seed, group=variant.row)


def parse_variant(text: str) -> Variant:
    """`i-mof`, `a-mof-<alpha>` (e.g. a-mof-0.5), `llava-1.5`, or a twin I-MoF (`i-mof-clip-clip`,
    `i-mof-dinov2-dinov2`)."""
    if text == I_MOF.name:
        return I_MOF
    if text == LLAVA_15.name:
        return LLAVA_15
    if text in TWIN_I_MOFS:
        return TWIN_I_MOFS[text]
    if text.startswith("a-mof-"):
        try:
            alpha = float(text[len("a-mof-") :])
        except ValueError:
            alpha = -1.0
        if 0.0 <= alpha <= 1.0:
            return a_mof(alpha)
    raise UnknownVariantError(
        f"unknown demo model {text!r}: use i-mof, a-mof-<alpha in [0, 1]> (e.g. a-mof-0.5), llava-1.5, "
        f"{' or '.join(TWIN_I_MOFS)}"
    )


AtLeast1 = Annotated[int, Field(ge=1)]
Positive = Annotated[float, Field(gt=0)]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes and optimisation of the demo. The defaults take 1-2 minutes on a 2-core CPU (measured
    times in docs/demo.md)."""

    seed: int = 0
    samples: AtLeast1 = 512  # pictures per training stage
    mmvp_pairs: AtLeast1 = 24
    batch_size: AtLeast1 = 16
    stage1_epochs: Positive = 1.0
    stage2_epochs: Positive = 1.0
    # Far above LLaVA's 1e-3 / 2e-5: the models are tiny, and the loss should fall visibly within a
    # few dozen steps.
    stage1_learning_rate: Positive = 1e-2
    stage2_learning_rate: Positive = 1e-3
    llm_hidden_size: AtLeast1 = 64
    language_steps: AtLeast1 = 200  # the LLM's language pre-training (see language.py)
    language_learning_rate: float = 3e-3
    max_length: int = 512
    dataloader_workers: int = 0
    eval_batch_size: AtLeast1 = 8
    max_new_tokens: int | None = None  # None: the MMVP prompt's reference setting
    report_to: str = "none"
    progress: bool = True
    # Torch threads while the demo runs (None: mof_llava/threads.py decides). The matrices are so
    # small that splitting them over threads costs more than it saves, and on a busy machine extra
    # threads make it many times slower. The run configs carry it as train.cpu_threads.
    threads: int | None = 1

    def __post_init__(self) -> None:
        check(self, "demo setting ")  # the types and bounds above (mof_llava/typed_config.py)

    def sizes(self) -> DatasetSizes:
        return DatasetSizes(pretrain=self.samples, instruct=self.samples, mmvp_pairs=self.mmvp_pairs)


@dataclass
class StageResult:
    config: Path  # the YAML run config
    output_dir: Path
    artifact: Path  # adapters/ or model/
    losses: list[float]  # the training loss of every step

    @property
    def metrics(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def checkpoints(self) -> list[Path]:
        return sorted(self.output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))

    @property
    def loss_window(self) -> int:
        return loss_window(len(self.losses))

    def loss_ends(self) -> tuple[float, float]:
        return smoothed_loss_ends(self.losses)


def loss_window(steps: int) -> int:
    """Steps at each end of a loss curve that `smoothed_loss_ends` summarises: 5, fewer on short
    curves, so that the two ends never overlap."""
    return max(1, min(5, steps // 4))


def smoothed_loss_ends(losses: Sequence[float]) -> tuple[float, float]:
    """Medians of the loss over the first and over the last `loss_window` steps. Single steps are
    noisy (stage 2's text-only batches score 2-3 where the others score 0.5, say), so the first and
    the last step alone can show a rise where the run fell; the medians show the trend."""
    window = loss_window(len(losses))
    return statistics.median(losses[:window]), statistics.median(losses[-window:])


@dataclass
class VariantResult:
    variant: Variant
    stage1: StageResult
    stage2: StageResult
    eval_dir: Path | None = None
    scores: dict[str, Any] = field(default_factory=dict)  # MMVP pair / question accuracy

    @property
    def answers(self) -> Path | None:
        return None if self.eval_dir is None else self.eval_dir / "answers.jsonl"


@dataclass
class DemoResult:
    out_dir: Path
    data_dir: Path
    components: Components
    variants: list[VariantResult]
    seconds: dict[str, float]  # wall time of each step


@dataclass(frozen=True)
class Components:
    """The checkpoints every run starts from."""

    root: Path
    llm: Path  # the tiny LLM after its language pre-training
    clip: Path
    dinov2: Path
    language_loss: tuple[float, float]  # first and last step of the language pre-training


# ---------------------------------------------------------------------------------------------
# Pipeline


def run_demo(
    out_dir: str | Path,
    settings: DemoSettings = DemoSettings(),
    variants: Sequence[Variant] = (I_MOF,),
    evaluate: bool = True,
) -> DemoResult:
    """Generate the data and tiny components once, then train and evaluate each variant."""
    import torch

    from ..threads import apply_cpu_threads

    out = Path(out_dir).resolve()
    manifest = _Manifest.open(out, settings)
    steps = _Steps(2 + len(variants) * (3 if evaluate else 2), manifest)
    threads = torch.get_num_threads()
    steps.say(f"mof-llava demo into {out}/: {steps.total} steps")
    steps.say(apply_cpu_threads(settings.threads, "--threads").describe())
    try:
        with steps.step("data", f"data: {settings.samples} pictures per stage, {settings.mmvp_pairs} MMVP pairs"):
            data = dataset_paths(out / "data")
            if not manifest.done("data"):
                write_dataset(data.root, settings.seed, settings.sizes(), world=LAB)
                manifest.finish("data")
        with steps.step(
            "components",
            f"components: the toy lab's trained towers and a tiny random LLM, then {settings.language_steps} "
            "steps of language pre-training of the LLM (the longest step)",
        ):
            components = _components(out / "components", data, settings, manifest)
        results = [_run_variant(out, v, settings, components, manifest, evaluate, steps) for v in variants]
    finally:
        torch.set_num_threads(threads)
    seconds = steps.seconds
    manifest.record_results(results, seconds)
    return DemoResult(out, data.root, components, results, seconds)


def _components(root: Path, data, settings: DemoSettings, manifest: _Manifest) -> Components:
    """Copies of the toy towers (`clip/`, `dinov2/`), a tiny random LLM with its tokenizer (`llm/`),
    and the LLM after its language pre-training (`llm-text/`)."""
    import shutil

    from ..toy_towers import toy_towers
    from .language import pretrain_language_model, training_texts

    parts = Components(root, root / "llm-text", root / "clip", root / "dinov2", (0.0, 0.0))
    if manifest.done("components"):
        return replace(parts, language_loss=tuple(manifest.content["language_loss"]))
    towers = toy_towers(TOWER_SEED)
    # Copied, so the run configs point inside OUT/ and the folder stays whole on its own.
    shutil.copytree(towers.clip, parts.clip, dirs_exist_ok=True)
    shutil.copytree(towers.ssl, parts.dinov2, dirs_exist_ok=True)
    _save_random_llm(root / "llm", settings.llm_hidden_size, settings.seed)
    texts = training_texts(data.pretrain_file, data.instruct_file)
    losses = pretrain_language_model(
        root / "llm",
        parts.llm,
        texts,
        settings.language_steps,
        settings.language_learning_rate,
        seed=settings.seed,
        progress=settings.progress,
    )
    ends = smoothed_loss_ends(losses)
    manifest.content["language_loss"] = list(ends)  # medians of the first / last steps
    manifest.finish("components")
    return replace(parts, language_loss=ends)


def _save_random_llm(path: Path, hidden_size: int, seed: int) -> None:
    """A tiny random Llama and its tokenizer, as the tests build them (`mof_llava.testing.tiny`)."""
    import torch
    from transformers import LlamaForCausalLM

    from ..testing.tiny import build_tiny_tokenizer, tiny_llama_config

    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer()
    LlamaForCausalLM(tiny_llama_config(len(tokenizer), hidden_size=hidden_size)).save_pretrained(path)
    tokenizer.save_pretrained(path)


def _run_variant(
    out: Path,
    variant: Variant,
    settings: DemoSettings,
    components: Components,
    manifest: _Manifest,
    evaluate: bool,
    steps: _Steps,
) -> VariantResult:
    folder = out / variant.name
    stage1_yaml, stage2_yaml = write_run_configs(
        folder, variant, settings, out / "data", components, out / "cache"
    )
    name = variant.name
    with steps.step(f"{name} stage 1", f"{name} stage 1: training the adapters", f"{name}/stage1"):
        stage1 = _train_stage(stage1_yaml, f"{name}/stage1", manifest)
    with steps.step(f"{name} stage 2", f"{name} stage 2: training the adapters and the LLM", f"{name}/stage2"):
        stage2 = _train_stage(stage2_yaml, f"{name}/stage2", manifest)
    result = VariantResult(variant, stage1, stage2)
    if evaluate:
        result.eval_dir = folder / "eval" / "mmvp"
        questions = 2 * settings.mmvp_pairs
        with steps.step(f"{name} eval", f"{name} evaluation: {questions} synthetic MMVP questions"):
            result.scores = evaluate_mmvp(
                stage2.artifact, out / "data", result.eval_dir, variant.name, settings
            )
    write_run_record(folder, variant, settings, ["mmvp"] if evaluate else [])
    return result


def write_run_record(
    folder: Path, variant: Variant, settings: DemoSettings, benchmarks: list[str], sweep: str = "demo"
) -> None:
    """`<variant>/experiment.json`: the variant folder has a sweep run's layout, so `mof-llava sweep
    status` and `mof-llava tables` read the demo (and the lab, `sweep="lab"`) like a sweep."""
    from ..experiments.layout import RunLayout, RunRecord

    seed = settings.seed if variant.train_seed is None else variant.train_seed
    RunRecord(
        sweep=sweep,
        run=variant.name,
        group=variant.row,
        arm=variant.arm,
        point={"model.mixer.alpha": variant.mixer.alpha} if variant.mixer.mode == "additive" else {},
        seed=seed,
        benchmarks=benchmarks,
        steps=RunLayout(folder).steps(benchmarks),
    ).save(folder)


def _train_stage(config_path: Path, step: str, manifest: _Manifest) -> StageResult:
    from ..training.config import load_run_config

    config = load_run_config(config_path)
    output_dir = Path(config.train.output_dir)
    artifact = output_dir / ("adapters" if config.train.stage == "pretrain" else "model")
    if not manifest.done(step):
        from ..training.run import finish_distributed, train

        try:
            artifact = train(config).artifact  # the result goes before the process group does
        finally:
            finish_distributed()
        manifest.finish(step)
    return StageResult(config_path, output_dir, artifact, read_losses(output_dir / "metrics.jsonl"))


def read_losses(metrics_file: Path) -> list[float]:
    """The training loss of every logged step, in order (a resumed run logs its steps again after
    the checkpoint it resumed from; the later value of a step wins)."""
    by_step: dict[int, float] = {}
    for line in metrics_file.read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            by_step[int(row["step"])] = float(row["loss"])
    if not by_step:
        raise ValueError(f"{metrics_file}: no training loss logged")
    return [by_step[s] for s in sorted(by_step)]


# ---------------------------------------------------------------------------------------------
# Run configs


def run_config_dicts(
    variant: Variant,
    settings: DemoSettings,
    data_dir: Path,
    components: Components,
    cache_dir: Path,
    folder: Path,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stage-1 config, and the stage-2 settings that go on top of it."""
    towers = _tower_entries(variant, components)
    data = dataset_paths(data_dir)
    steps_per_epoch = -(-settings.samples // settings.batch_size)
    common_train = _common_train(variant, settings)
    stage1 = {
        "name": f"{variant.name}-stage1",
        "model": {"llm": str(components.llm), "towers": towers, "mixer": variant.mixer.to_dict()},
        "data": {
            "data_path": str(data.pretrain_file),
            "image_folder": str(data.image_folder),
            # The captions describe the whole picture, corners included, so stage 1 pads to a
            # square too (LLaVA-1.5 centre-crops in stage 1).
            "image_aspect_ratio": "pad",
            "max_length": settings.max_length,
            "cache_dir": str(cache_dir),
            "num_proc": 1,
        },
        "train": {
            **common_train,
            **_stage_train(settings, 1, folder, steps_per_epoch),
        },
    }
    stage2 = {
        "name": f"{variant.name}-stage2",
        "model": {"adapters_from": str(folder / "stage1" / "adapters")},
        "data": {"data_path": str(data.instruct_file)},
        "train": _stage_train(settings, 2, folder, steps_per_epoch),
    }
    return stage1, stage2


def _stage_train(settings: DemoSettings, stage: int, folder: Path, steps_per_epoch: int) -> dict[str, Any]:
    """Stage 1's or 2's own train settings; each stage saves twice (halfway and at the end)."""
    learning_rate, epochs = {
        1: (settings.stage1_learning_rate, settings.stage1_epochs),
        2: (settings.stage2_learning_rate, settings.stage2_epochs),
    }[stage]
    return {
        "stage": "pretrain" if stage == 1 else "finetune",
        "output_dir": str(folder / f"stage{stage}"),
        "learning_rate": learning_rate,
        "num_epochs": epochs,
        "save_steps": max(1, int(steps_per_epoch * epochs) // 2),
    }


def _tower_entries(variant: Variant, components: Components) -> list[dict[str, Any]]:
    tower_paths = {"clip": components.clip, "dinov2": components.dinov2}
    # The paper's layers (presets.py): CLIP's layer -2, DINOv2's last block before its final LayerNorm.
    feature_layers = {"clip": CLIP_L14_336.feature_layer, "dinov2": DINOV2_L14.feature_layer}
    sources = [t.removesuffix(TWIN) for t in variant.towers]  # a twin loads its tower's checkpoint
    return [
        {"name": t, "path": str(tower_paths[s]), "feature_layer": feature_layers[s]}
        for t, s in zip(variant.towers, sources)
    ]


def _common_train(variant: Variant, settings: DemoSettings) -> dict[str, Any]:
    """The train settings both stages share."""
    return {
        "global_batch_size": settings.batch_size,
        "per_device_batch_size": settings.batch_size,
        "gradient_checkpointing": False,  # nothing to save at these sizes, and it costs time
        "report_to": settings.report_to,
        "dataloader_num_workers": settings.dataloader_workers,
        "seed": settings.seed if variant.train_seed is None else variant.train_seed,
        "data_seed": variant.data_seed,
        "save_total_limit": 1,
        "cpu_threads": settings.threads,
    }


def write_run_configs(
    folder: Path,
    variant: Variant,
    settings: DemoSettings,
    data_dir: Path,
    components: Components,
    cache_dir: Path,
    stage2_overrides: dict[str, dict[str, Any]] | None = None,
    stage1_overrides: dict[str, dict[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """Write `stage1.yaml` and `stage2.yaml` (which inherits it) into `folder`. `stage1_overrides`,
    `stage2_overrides`: keys per section (model, data, train) set on top of that stage's own, nested
    dicts merged key by key (e.g. the toy lab's LION arms: `model.mixer.aggregator`)."""
    import yaml

    stage1, stage2 = run_config_dicts(variant, settings, data_dir, components, cache_dir, folder)
    # Overrides merge key by key, as a YAML's `inherit` does (typed_config's merge).
    stage1, stage2 = deep_merge(stage1, stage1_overrides or {}), deep_merge(stage2, stage2_overrides or {})
    stage2 = {"inherit": "stage1.yaml", **stage2}
    header = (
        f"# {variant.name}, stage {{}} of the mof-llava demo (seed {settings.seed}).\n"
        f"# Run it by hand with: mof-llava train {folder}/stage{{}}.yaml\n"
    )
    paths = []
    for number, config in ((1, stage1), (2, stage2)):
        path = folder / f"stage{number}.yaml"
        write_text_atomic(path, header.format(number, number) + yaml.safe_dump(config, sort_keys=False))
        paths.append(path)
    return paths[0], paths[1]


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate_mmvp(
    model_dir: Path, data_dir: Path, output_dir: Path, model_id: str, settings: DemoSettings
) -> dict[str, Any]:
    """Answer the synthetic MMVP questions with the LLaVA-1.5 letter prompt and score them, through
    the runner of `mof-llava eval run mmvp`; plus pair accuracy per visual pattern (as
    `mof-llava eval analyze` computes it)."""
    from ..benchmarks import mmvp
    from ..benchmarks.analysis import mmvp_correctness, per_pattern_pair_accuracy, read_pattern_map
    from ..benchmarks.generation import load_model, make_generate_fn, model_info
    from ..benchmarks.runner import Distributed, RunOptions, run_task

    data = dataset_paths(data_dir)
    task = mmvp.build_task(data.mmvp_dir, max_new_tokens=settings.max_new_tokens)
    options = RunOptions(
        output_dir=output_dir,
        model=str(model_dir),
        model_id=model_id,
        batch_size=settings.eval_batch_size,
        progress=settings.progress,
        model_info=model_info(model_dir, "cpu", "float32"),
    )

    def load_generator():
        model, processor = load_model(model_dir, "cpu", "float32")
        return make_generate_fn(model, processor, task.max_new_tokens)

    metrics = run_task(task, load_generator, options, Distributed())  # one process
    scores = {
        k: metrics[k] for k in ("pair_accuracy", "pairs_correct", "pairs", "question_accuracy", "unread")
    }
    patterns = per_pattern_pair_accuracy(mmvp_correctness(metrics), read_pattern_map(data.mmvp_patterns))
    scores["per_pattern"] = patterns["per_pattern"]
    return scores


# ---------------------------------------------------------------------------------------------
# Bookkeeping


class _Manifest:
    """`OUT/demo.json`: the settings and the steps finished so far, rewritten atomically."""

    def __init__(self, path: Path, content: dict[str, Any]):
        self.path = path
        self.content = content

    @classmethod
    def open(cls, out: Path, settings: DemoSettings) -> _Manifest:
        path = out / MANIFEST
        if path.is_file():
            content = json.loads(path.read_text())
            before, now = _comparable(content.get("settings", {})), _comparable(asdict(settings))
            if before != now:
                changed = sorted(k for k in now if before.get(k) != now[k])
                raise DemoFolderError(
                    f"{out} holds a demo made with other settings ({', '.join(changed)}: {[before.get(k) for k in changed]}); "
                    "use another output folder, or delete this one to start over"
                )
        elif out.exists() and any(out.iterdir()):
            raise DemoFolderError(
                f"{out} is not empty and holds no {MANIFEST}; choose an empty or new output folder"
            )
        else:
            content = {"finished": []}
        content["settings"] = asdict(settings)
        manifest = cls(path, content)
        manifest._save()
        return manifest

    def done(self, step: str) -> bool:
        return step in self.content["finished"]

    def finish(self, step: str) -> None:
        self.content["finished"].append(step)
        self._save()

    def record_results(self, results: list[VariantResult], seconds: dict[str, float]) -> None:
        self.content["results"] = self.content.get("results", {}) | {
            r.variant.name: {
                "stage1": _stage_summary(r.stage1),
                "stage2": _stage_summary(r.stage2),
                "mmvp": r.scores or None,
                "answers": None if r.answers is None else str(r.answers),
            }
            for r in results
        }
        self.content["seconds"] = {**self.content.get("seconds", {}), **seconds}
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.content, indent=1) + "\n")


# Settings that change nothing a finished step wrote.
_COSMETIC = ("progress", "report_to", "dataloader_workers", "eval_batch_size", "threads")


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in _COSMETIC}


def _stage_summary(stage: StageResult) -> dict[str, Any]:
    start, end = stage.loss_ends()
    return {
        "config": str(stage.config),
        "artifact": str(stage.artifact),
        "metrics": str(stage.metrics),
        "checkpoints": [str(c) for c in stage.checkpoints],
        "steps": stage.steps,
        "first_loss": stage.losses[0],
        "last_loss": stage.losses[-1],
        "loss_window": stage.loss_window,
        "median_loss_first_steps": start,
        "median_loss_last_steps": end,
    }


class _Steps:
    """Numbered progress lines on stderr, one when a step starts and one when it ends (with its wall
    time), written through tqdm so they never land on a progress bar's line."""

    def __init__(self, total: int, manifest: _Manifest):
        self.total = total
        self.manifest = manifest
        self.seconds: dict[str, float] = {}

    @staticmethod
    def say(text: str) -> None:
        import sys

        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)

    @contextmanager
    def step(self, name: str, text: str, manifest_step: str | None = None) -> Iterator[None]:
        number = f"[{len(self.seconds) + 1}/{self.total}]"
        done = self.manifest.done(manifest_step or name)
        self.say(f"{number} {text}" + (" (done before: skipped)" if done else ""))
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 1)
        self.say(f"{number} {name}: {self.seconds[name]:.0f} s")


