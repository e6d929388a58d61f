"""LION in the toy lab: does a tagger's noisy output before the question help (the tag-prompt arm)?
Does the multi-level aggregator help the fine-grained attributes (the aggregator arm)?

    lab_lion(LabLionConfig(out="lab-lion", lab="lab-runs", seeds=(0, 1, 2)))

It reads a `lab run` folder (`mllm.run_lab`: its data, language-pre-trained LLM and each seed's
stage-1 adapters) and writes only into `out`:

1. Tags (`mof_llava.tags.tag`, the `mof-llava tags` verb) for every stage-2 and held-out picture
   from the lab's own toy CLIP, zero-shot over the world's caption kinds ("red circle": every
   colour with every shape, embedded as the captions it trained on, "a red circle"), the best
   `top_k`; so the tags are a tagger's noisy output (it reads colour, not shape), not the scenes'
   metadata. The tagger's accuracy against the metadata is kept too.
2. Per training seed, stage 2 with `model.tag_soft_prompt` and `data.tag_prompt` (LION's dropout and
   shuffle) on the tagged records, from the same stage-1 adapters and LLM as the lab's own stage 2
   (the no-tags arm): the lab's run configs (`demo.run.write_run_configs`) with those keys added.
3. Held-out short-answer accuracy per attribute through the GQA runner (`mllm.heldout_accuracy`),
   the tagged arm with the held-out tags file (`eval run --tags-file`).

The aggregator arm (`arm="aggregator"`) instead trains, per seed, the lab's stages 1 and 2 with
`mixer.aggregator` on every tower (`aggregator_keys`: frozen at its identity init in stage 1 as in
LION's stage 0, trained in stage 2 as in its region stage) and scores it against the lab's own
stage-2 model of the variant (which it needs finished), on the same held-out set.

A seed whose stage 1 or stage 2 the lab has not finished is trained here, with the lab's configs, so
both arms still share their stage 1. Which folder each arm came from is fixed in the manifest the
first time, so a resumed run keeps comparing the same models.

    OUT/lab_lion.json                settings, sources, finished steps, scores
    OUT/data/                        vocabulary, tagged stage-2 records, held-out tags
    OUT/<variant>-seed<k>/           the no-tags arm's stages, when the lab lacks them
    OUT/<variant>-seed<k>-tags/      the tagged stage 2 and its evaluation
    OUT/<variant>-seed<k>-aggregator/  the aggregator arm's stages and evaluation
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..tags.clip_zero_shot import CLIPZeroShotTagger
from . import world
from .mllm import MANIFEST as LAB_MANIFEST
from .mllm import LabConfig, LabRunError, heldout_accuracy, mean_std, open_manifest, write_manifest

MANIFEST = "lab_lion.json"
KIND_PROMPT = "a {}"  # the toy CLIP's captions name a kind as "a red circle"
ARMS = {"tags": ("no_tags", "tags"), "aggregator": ("no_aggregator", "aggregator")}  # scores' keys


@dataclass(frozen=True)
class LabLionConfig:
    out: str
    lab: str  # a `lab run` folder (read only)
    variant: str = "llava-1.5"
    seeds: tuple[int, ...] = (0,)
    top_k: int = 2  # a lab scene shows at most two kinds (the main one and a companion)
    dropout: float = 0.1  # data.tag_prompt: each tag left out with this probability, as LION trains
    shuffle: bool = True
    arm: str = "tags"  # or "aggregator" (ARMS)
    # hidden_states offsets from each tower's query layer: the toy towers have 4 blocks, so LION's
    # -10, -20 (of 24) become the two blocks below it (CLIP at -2 reads 3 -> 2, 1; the SSL tower 4 -> 3, 2)
    aggregator_offsets: tuple[int, ...] = (-1, -2)
    threads: int | None = 1
    progress: bool = True


class ToyClipTagger(CLIPZeroShotTagger):
    """The project's zero-shot tagger on a toy CLIP, whose text side is word-level (the lab's caption
    vocabulary, `towers.vocabulary`) rather than a saved tokenizer; scoring and selection are the
    zero-shot tagger's own."""

    def __init__(self, checkpoint: str | Path, vocabulary: Sequence[str], *, top_k: int):
        import torch
        from transformers import CLIPImageProcessor, CLIPModel

        from ..data.images import DEFAULT_IMAGE_LOADING
        from .towers import encode_captions
        from .towers import vocabulary as caption_ids

        self.model = CLIPModel.from_pretrained(checkpoint, dtype=torch.float32).eval()
        self.processor = CLIPImageProcessor.from_pretrained(checkpoint)
        self.vocabulary, self.top_k, self.min_probability = list(vocabulary), top_k, 0.0
        self.image_loading, self.device = DEFAULT_IMAGE_LOADING, "cpu"
        ids = encode_captions([KIND_PROMPT.format(word) for word in self.vocabulary], caption_ids())
        with torch.no_grad():
            features = self.model.get_text_features(input_ids=ids, attention_mask=(ids > 0).long())
        self.text_embeddings = torch.nn.functional.normalize(features.pooler_output.float(), dim=-1)


def kinds() -> list[str]:
    """The tagger's vocabulary: every colour with every shape, as the captions name them."""
    from ..scenes.drawing import SHAPES

    return [f"{colour} {shape}" for colour in world.COLOURS for shape in SHAPES]


def lab_lion(config: LabLionConfig, say: Callable[[str], None] = print) -> dict:
    """Tags, then per seed the arms' stages and evaluations (module docstring); returns the scores
    {"tagger": ..., "runs": {name: {"tags": {attribute: %}, "no_tags": {...}}}} (the aggregator arm:
    no tagger, and ARMS' keys)."""
    import torch

    from ..threads import apply_cpu_threads

    if config.arm not in ARMS:
        raise LabRunError(f"lab lion: unknown arm {config.arm!r}; choose one of {list(ARMS)}")
    out, lab = Path(config.out).resolve(), Path(config.lab).resolve()
    lab_config, lab_manifest = _lab_run(lab, config)
    manifest = _open_manifest(out, config, lab_manifest["settings"])
    threads = torch.get_num_threads()
    apply_cpu_threads(config.threads, "threads")
    try:
        if config.arm == "tags":
            _tag(out, lab, lab_config, config, manifest, say)
        for seed in config.seeds:
            run = _run_seed if config.arm == "tags" else _run_aggregator_seed
            run(out, lab, lab_config, lab_manifest, config, seed, manifest, say)
    finally:
        torch.set_num_threads(threads)
    return {"tagger": manifest.get("tagger"), "runs": manifest.get("scores", {}), "arm": config.arm}


def _lab_run(lab: Path, config: LabLionConfig) -> tuple[LabConfig, dict]:
    path = lab / LAB_MANIFEST
    if not path.is_file():
        raise LabRunError(f"{lab}: no {LAB_MANIFEST} there (a `mof-llava lab run` folder is needed)")
    manifest = json.loads(path.read_text())
    if not {"data", "language"} <= set(manifest["finished"]):
        raise LabRunError(f"{lab}: the lab run has not finished its data and language model yet")
    lab_config = LabConfig(
        out=str(lab), threads=config.threads, progress=config.progress, **manifest["settings"]
    )
    return lab_config, manifest


# ---------------------------------------------------------------------------------------------
# Tags


def _tag(out: Path, lab: Path, lab_config: LabConfig, config: LabLionConfig, manifest: dict, say) -> None:
    from ..atomic import write_text_atomic
    from ..tags import TagJob, tag

    if "tags" in manifest["finished"]:
        return
    data = out / "data"
    vocabulary = data / "vocabulary.txt"
    write_text_atomic(vocabulary, "".join(f"{kind}\n" for kind in kinds()))
    heldout_records = data / "heldout_records.json"
    write_text_atomic(
        heldout_records, json.dumps(heldout_as_records(lab / "data" / "heldout"), indent=1) + "\n"
    )
    towers = Path(lab_config.towers)
    tagger = ToyClipTagger(towers / "clip", kinds(), top_k=config.top_k)
    for source, images, output in (
        (lab / "data" / "stage2_instruct.json", lab / "data" / "images", data / "stage2_tags.jsonl"),
        (heldout_records, lab / "data" / "heldout" / "images", data / "heldout_tags.jsonl"),
    ):
        job = TagJob(source, output, tagger="clip", image_folder=str(images), clip_model=str(towers / "clip"),
                     vocabulary=str(vocabulary), top_k=config.top_k, prompt=KIND_PROMPT,
                     progress=config.progress)  # fmt: skip
        say(tag(job, tagger=tagger).describe())
    manifest["tagger"] = {
        "stage2": tagger_accuracy(_tags_by_image(data / "stage2_tags.jsonl"), stage2_scenes(lab_config)),
        "heldout": tagger_accuracy(_tags_by_image(data / "heldout_tags.jsonl"), heldout_scenes(lab_config)),
    }
    _finish(out, manifest, "tags")


def heldout_as_records(folder: Path) -> list[dict]:
    """The held-out GQA folder's questions as LLaVA records (image, question, gold answer), the
    input `tag` reads; its output then serves as the tags file (keyed by `image`)."""
    from ..benchmarks.gqa import LLAVA_QUESTIONS, OFFICIAL_QUESTIONS

    gold = json.loads((folder / OFFICIAL_QUESTIONS).read_text())
    listed = [
        json.loads(line) for line in (folder / LLAVA_QUESTIONS).read_text().splitlines() if line.strip()
    ]
    return [{"id": q["question_id"], "image": q["image"],
             "conversations": [{"from": "human", "value": f"<image>\n{q['text']}"},
                               {"from": "gpt", "value": gold[q["question_id"]]["answer"]}]}
            for q in listed]  # fmt: skip


def stage2_scenes(lab_config: LabConfig) -> dict[str, world.LabScene]:
    from .mllm_data import training_scene

    # The lab's own pictures: with its colour prior, as write_training_files drew them.
    return {f"instruct/{i:06d}.png": training_scene(lab_config.seed, "instruct", i, lab_config.colour_prior)[1]
            for i in range(lab_config.samples)}  # fmt: skip


def heldout_scenes(lab_config: LabConfig) -> dict[str, world.LabScene]:
    from .mllm_data import benchmark_pairs

    pairs = benchmark_pairs(lab_config.seed, "heldout", lab_config.heldout_pairs)
    return {
        f"{k:04d}{side}.png": scene
        for k, (_, a, b, _) in enumerate(pairs)
        for side, scene in (("a", a), ("b", b))
    }


def tagger_accuracy(tags: dict[str, list[str]], scenes: dict[str, world.LabScene]) -> dict[str, float]:
    """How often the tags name the main object's colour and its shape (%: what the colour and shape
    questions ask), and the share of tags naming a kind that is in the picture."""
    colour = shape = present = count = 0
    for key, scene in scenes.items():
        named = [kind.split(" ", 1) for kind in tags[key]]
        colour += scene.main[0].colour in {c for c, _ in named}
        shape += scene.main[0].shape in {s for _, s in named}
        shown = {(t.colour, t.shape) for t in scene.things}
        present += sum(tuple(kind) in shown for kind in named)
        count += len(named)
    n = len(scenes)
    return {"images": n, "colour": 100.0 * colour / n, "shape": 100.0 * shape / n,
            "kind_precision": 100.0 * present / max(count, 1)}  # fmt: skip


def _tags_by_image(path: Path) -> dict[str, list[str]]:
    from ..data.tags_file import read_tags_file

    return read_tags_file(path)


# ---------------------------------------------------------------------------------------------
# Stages and evaluation


def _run_seed(out, lab, lab_config, lab_manifest, config, seed, manifest, say) -> None:
    from ..demo.run import parse_variant, with_seed

    variant = with_seed(parse_variant(config.variant), seed)
    sources = manifest.setdefault("sources", {})
    sources = sources.setdefault(variant.name, _sources(out, lab, variant, lab_manifest))
    _finish(out, manifest, None)
    plain, tagged = out / variant.name, out / f"{variant.name}-tags"
    adapters = {"adapters_from": str(Path(sources["stage1"]) / "adapters")}
    tag_prompt = {"dropout": config.dropout, "shuffle": config.shuffle, "seed": seed}
    tag_keys = {
        "model": {**adapters, "tag_soft_prompt": True},
        "data": {"data_path": str(out / "data" / "stage2_tags.jsonl"), "tag_prompt": tag_prompt},
    }
    steps = [(f"{variant.name}/stage1", plain, None, 0)] if sources["stage1"] == str(plain / "stage1") else []
    if sources["no_tags"] == str(plain / "stage2" / "model"):
        steps.append((f"{variant.name}/stage2", plain, {"model": adapters}, 1))
    steps.append((f"{variant.name}-tags/stage2", tagged, tag_keys, 1))
    for step, folder, keys, stage in steps:
        if step not in manifest["finished"]:
            say(step)
            _train(folder, variant, lab, lab_config, out, keys, stage)
            _finish(out, manifest, step)
    _evaluate_seed(out, lab, lab_config, lab_manifest, variant.name, manifest, say)


def _evaluate_seed(out, lab, lab_config, lab_manifest, name, manifest, say) -> None:
    """Both arms on the held-out set; the no-tags arm's score is the lab's own when it has one."""
    sources = manifest["sources"][name]
    scores = manifest.setdefault("scores", {}).setdefault(name, {})
    heldout = lab / "data" / "heldout"
    if "no_tags" not in scores:
        from_lab = not Path(sources["no_tags"]).is_relative_to(out)
        scores["no_tags"] = lab_manifest.get("scores", {}).get(name, {}).get("heldout") if from_lab else None
        if scores["no_tags"] is None:
            say(f"{name}: held-out evaluation, no tags")
            folder = out / name / "eval" / "heldout"
            scores["no_tags"] = heldout_accuracy(Path(sources["no_tags"]), heldout, folder, lab_config)
        _finish(out, manifest, f"{name}/eval")
    if "tags" not in scores:
        say(f"{name}: held-out evaluation, with tags")
        tagged, tags = out / f"{name}-tags", out / "data" / "heldout_tags.jsonl"
        model, folder = tagged / "stage2" / "model", tagged / "eval" / "heldout"
        scores["tags"] = heldout_accuracy(model, heldout, folder, lab_config, tags_file=tags)
        _finish(out, manifest, f"{name}-tags/eval")


def aggregator_keys(config: LabLionConfig, stage1_adapters: Path) -> tuple[dict, dict]:
    """The aggregator arm's stage-1 and stage-2 overrides of the lab's run configs: the aggregator is
    in the model from stage 1, frozen there at its identity init (LION's stage 0), and trains in
    stage 2 with the mixer (LION's region stage; the lab has one instruction stage)."""
    aggregator = {"layer_offsets": list(config.aggregator_offsets)}
    stage1 = {"model": {"mixer": {"aggregator": aggregator}}, "train": {"lion": {"aggregator": False}}}
    stage2 = {"model": {"adapters_from": str(stage1_adapters)}, "train": {"lion": {"aggregator": True}}}
    return stage1, stage2


def _run_aggregator_seed(out, lab, lab_config, lab_manifest, config, seed, manifest, say) -> None:
    from ..demo.run import parse_variant, with_seed

    variant = with_seed(parse_variant(config.variant), seed)
    name = variant.name
    if f"{name}/stage2" not in lab_manifest["finished"]:
        raise LabRunError(f"{lab}: the lab has not finished {name}/stage2, the arm without the aggregator")
    folder, heldout = out / f"{name}-aggregator", lab / "data" / "heldout"
    stage1, stage2 = aggregator_keys(config, folder / "stage1" / "adapters")
    for stage, step in enumerate((f"{name}-aggregator/stage1", f"{name}-aggregator/stage2")):
        if step not in manifest["finished"]:
            say(step)
            _train(folder, variant, lab, lab_config, out, stage2, stage, stage1)
            _finish(out, manifest, step)
    scores = manifest.setdefault("scores", {}).setdefault(name, {})
    if "no_aggregator" not in scores:
        scores["no_aggregator"] = lab_manifest.get("scores", {}).get(name, {}).get("heldout")
        if scores["no_aggregator"] is None:
            say(f"{name}: held-out evaluation, the lab's model")
            model, evaluated = lab / name / "stage2" / "model", out / name / "eval" / "heldout"
            scores["no_aggregator"] = heldout_accuracy(model, heldout, evaluated, lab_config)
        _finish(out, manifest, f"{name}/eval")
    if "aggregator" not in scores:
        say(f"{name}: held-out evaluation, with the aggregator")
        model = folder / "stage2" / "model"
        scores["aggregator"] = heldout_accuracy(model, heldout, folder / "eval" / "heldout", lab_config)
        _finish(out, manifest, f"{name}-aggregator/eval")


def _sources(out: Path, lab: Path, variant, lab_manifest: dict) -> dict[str, str]:
    """Where the seed's stage-1 adapters and no-tags model come from: the lab's, when it has
    finished them (its stage 2 only on top of its own stage 1), else trained here."""
    finished = set(lab_manifest["finished"])
    lab_stage1 = f"{variant.name}/stage1" in finished
    stage1 = (lab if lab_stage1 else out) / variant.name / "stage1"
    lab_stage2 = lab_stage1 and f"{variant.name}/stage2" in finished
    return {
        "stage1": str(stage1),
        "no_tags": str((lab if lab_stage2 else out) / variant.name / "stage2" / "model"),
    }


def _train(
    folder: Path, variant, lab: Path, lab_config: LabConfig, out: Path, keys, stage: int, stage1_keys=None
) -> None:
    from ..demo.run import Components, write_run_configs
    from ..training.config import load_run_config
    from ..training.run import finish_distributed, train

    towers = Path(lab_config.towers)
    root = lab / "components"
    components = Components(root, root / "llm-text", towers / "clip", towers / "ssl", (0.0, 0.0))
    settings = lab_config.settings()
    cache = out / "cache"
    configs = write_run_configs(folder, variant, settings, lab / "data", components, cache, keys, stage1_keys)
    try:
        train(load_run_config(configs[stage]), progress=lab_config.progress)
    finally:
        finish_distributed()


# ---------------------------------------------------------------------------------------------
# Table and bookkeeping


def table(result: dict) -> str:
    """Markdown: held-out accuracy per attribute, without and with the arm's part (tags or the
    aggregator), mean ± sample std over seeds."""
    from ..scenes.questions import answer_values

    runs, arms = list(result["runs"].values()), ARMS[result.get("arm", "tags")]
    header = " | ".join(arm.replace("_", " ") for arm in arms)
    lines = [f"Held-out short-answer accuracy (%), {len(runs)} seed(s):", "",
             f"| attribute | {header} | chance |", "|---|---|---|---|"]  # fmt: skip
    for attribute in world.ATTRIBUTES:
        cells = [mean_std([(r.get(arm) or {}).get(attribute) for r in runs], each=True) for arm in arms]
        lines.append(f"| {attribute} | {cells[0]} | {cells[1]} | {100 / len(answer_values(attribute)):.0f} |")
    if result.get("tagger"):
        lines += ["", "Tagger against the scenes (%): " + json.dumps(result["tagger"])]
    return "\n".join(lines) + "\n"


_NOT_COMPARED = ("out", "seeds", "threads", "progress")
_TAG_ONLY = ("top_k", "dropout", "shuffle")


def _open_manifest(out: Path, config: LabLionConfig, lab_settings: dict) -> dict:
    settings = {k: v for k, v in asdict(config).items() if k not in _NOT_COMPARED}
    if config.arm != "tags":
        settings = {k: v for k, v in settings.items() if k not in _TAG_ONLY}
    settings["lab"] = str(Path(config.lab).resolve())
    settings["lab_settings"] = lab_settings  # a lab folder rebuilt with other settings is another lab
    # Folders from before the aggregator arm are tag-arm folders.
    before = {"arm": "tags", "aggregator_offsets": LabLionConfig.aggregator_offsets}
    return open_manifest(out / MANIFEST, settings, LabRunError, "a lab lion run", added_later=before)


def _finish(out: Path, manifest: dict, step: str | None) -> None:
    write_manifest(out / MANIFEST, manifest, step)
