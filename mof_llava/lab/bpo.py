"""BPO in the toy lab: does preference training on image-weakened negatives lower the answers that
follow the text prior? Everything goes through the library's verbs:

    lab_bpo(LabBpoConfig(model="lab-runs/llava-1.5-seed0/stage2/model", data="lab-runs/data", out="bpo"))

1. seeds: every short-answer round of the first `records` stage-2 records of `stage2_instruct.json`
   (the record's answer is the chosen one);
2. negatives: `preference.negatives` with `mllm-hal` (the model's own answer on the weakened picture:
   BPO's forward-diffusion noise, or another of the verb's corruptions) and, if asked, `llm-hal`
   through the rule rewriter. With `negative_picture: grey` the verb answers on step 3's grey picture
   instead of the record's (the text prior's answer; with `mask` at ratio 0 it is not weakened
   further), and the pairs get the record's picture back. `weaken_tower` weakens one tower's input
   only (the verb's `target`), the other tower seeing the record's picture;
3. before: held-out accuracy per attribute (`mllm.heldout_accuracy`, as `lab run` scores it), and the
   same questions on a uniform grey picture (made before step 2): what the text prior alone answers;
4. the preference stage (`train.stage: preference`, LoRA, reference `lora_disabled`) through
   `training.run.train`, then `merge_lora`;
5. after: step 3 again on the merged model.

    OUT/lab_bpo.json   settings, finished steps, scores (rewritten after every step)
    OUT/seeds.jsonl  OUT/pairs.jsonl  OUT/grey/  OUT/preference.yaml  OUT/preference/  OUT/model/
    OUT/seeds-grey.jsonl  OUT/pairs-grey.jsonl   with `negative_picture: grey`: the verb's input and output
    OUT/{before,after}/{heldout,grey}/   the GQA runner's answers and metrics

Running it again into the same folder with the same settings skips what is finished.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import write_text_atomic
from . import world

MANIFEST = "lab_bpo.json"
GREY = (128, 128, 128)  # a picture with nothing in it: what the question's text alone makes the model say
GREY_PICTURE = "grey.png"  # its file in OUT/grey/images/
NEGATIVE_PICTURES = ("own", "grey")  # the record's picture, weakened; or the grey one


class LabBpoError(ValueError):
    """The input or output folder is not what the lab's BPO run needs; one line naming it."""


@dataclass(frozen=True)
class LabBpoConfig:
    model: str  # a lab stage-2 model folder (`lab run`'s OUT/<variant>/stage2/model)
    data: str  # that run's data folder (stage2_instruct.json, images/, heldout/)
    out: str
    seed: int = 0  # the negatives' noise and sampling, and the preference run's training seed
    records: int = 150  # stage-2 records whose short-answer rounds seed the pairs
    neg_types: tuple[str, ...] = ("mllm-hal",)  # add "llm-hal" for the rule rewriter's arm
    negative_picture: str = "own"  # or "grey": the negatives are the answers on the grey picture
    corruption: str = "noise"  # BPO's; the negatives verb's noise, blur, mask or crop
    noise_step: int = 900  # BPO's
    mask_ratio: float = 0.5  # the verb's; 1.0 blanks the whole picture
    weaken_tower: str = "both"  # the verb's `target`: the tower whose input is weakened (clip, dinov2)
    temperature: float = 0.2  # BPO's; 0 is greedy
    max_new_tokens: int = 8  # a short answer is one or two words
    # LoRA at BPO's alpha/r of 8 (r 32 / alpha 256), r cut to the 64-wide toy LLM.
    lora_r: int = 8
    lora_alpha: int = 64
    learning_rate: float = 2e-4
    beta: float = 0.1  # BPO's
    nll_weight: float = 0.0  # times the chosen answers' NLL (0: BPO's loss)
    batch_size: int = 8  # pairs per step
    epochs: float = 4.0
    threads: int | None = 1
    progress: bool = False


def lab_bpo(config: LabBpoConfig, say: Callable[[str], None] = print) -> dict:
    """The steps of the module docstring, each once; returns the manifest's scores."""
    import torch

    from ..paths import check_model_path
    from ..threads import apply_cpu_threads

    check_model_path(config.model, "model", hub=False)
    if config.negative_picture not in NEGATIVE_PICTURES:
        raise LabBpoError(f"negative_picture must be one of {', '.join(NEGATIVE_PICTURES)}, "
                          f"got {config.negative_picture!r}")  # fmt: skip
    out, data = Path(config.out).resolve(), _check_data(Path(config.data).resolve())
    manifest = _open_manifest(out, config)
    threads = torch.get_num_threads()
    apply_cpu_threads(config.threads, "threads")
    try:
        steps = {
            "seeds": lambda: write_seeds(data / "stage2_instruct.json", out / "seeds.jsonl", config.records),
            "grey": lambda: write_grey_heldout(data / "heldout", out / "grey"),
            "negatives": lambda: _negatives(out, data, config),
            "before": lambda: _score(out, "before", Path(config.model).resolve(), data, config, manifest),
            "preference": lambda: _preference(out, data, config),
            "merge": lambda: _merge(out),
            "after": lambda: _score(out, "after", out / "model", data, config, manifest),
        }
        for name, step in steps.items():
            if name not in manifest["finished"]:
                say(f"bpo: {name}")
                step()
                _finish(out, manifest, name)
    finally:
        torch.set_num_threads(threads)
    return manifest["scores"]


def write_seeds(instruct_file: Path, seeds_file: Path, limit: int) -> int:
    """One negatives record per short-answer round of the first `limit` stage-2 records: the round's
    question over the record's picture, its answer chosen. A record's first round asks its colour or
    shape, the later ones the other attributes (`scenes.questions`), so all of them are used; a later
    round gets the `<image>` the first round carried."""
    from ..constants import IMAGE_TOKEN
    from ..prompts import SHORT_ANSWER

    seeds = []
    for record in json.loads(instruct_file.read_text())[:limit]:
        turns = record["conversations"]
        for k, (human, gpt) in enumerate(zip(turns[0::2], turns[1::2])):
            question = human["value"].removeprefix(f"{IMAGE_TOKEN}\n")
            if question.endswith(SHORT_ANSWER):
                seeds.append({"id": f"{record['id']}-{k}", "image": record["image"], "source": "lab-stage2",
                              "prompt": f"{IMAGE_TOKEN}\n{question}", "chosen": gpt["value"]})  # fmt: skip
    write_text_atomic(seeds_file, "".join(json.dumps(s) + "\n" for s in seeds))
    return len(seeds)


def write_grey_heldout(heldout: Path, folder: Path) -> None:
    """The held-out GQA folder with every question asked of one grey picture."""
    from PIL import Image

    from ..benchmarks.gqa import LLAVA_QUESTIONS, OFFICIAL_QUESTIONS

    (folder / "images").mkdir(parents=True, exist_ok=True)
    size = Image.open(next((heldout / "images").glob("*.png"))).size
    Image.new("RGB", size, GREY).save(folder / "images" / GREY_PICTURE)
    listed = [json.loads(line) for line in (heldout / LLAVA_QUESTIONS).read_text().splitlines() if line.strip()]
    write_text_atomic(folder / LLAVA_QUESTIONS, "".join(json.dumps({**q, "image": GREY_PICTURE}) + "\n" for q in listed))
    write_text_atomic(folder / OFFICIAL_QUESTIONS, (heldout / OFFICIAL_QUESTIONS).read_text())


def prior_following(answers: Path, prior_answers: Path, gold_file: Path) -> dict[str, dict]:
    """Per attribute and over all, of the held-out answers that are wrong: how many (`wrong`), how
    many are the answer the prior gave to the same question on the grey picture (`prior`, `share` in
    %), and how many are no answer to the question at all, not one of the attribute's values
    (`foreign`). Answers are compared after LLaVA's normalisation, as the GQA scorer compares them."""
    from ..benchmarks.answers import answer_key, answer_text, load_answer_index
    from ..benchmarks.gqa import llava_normalize, read_official_questions
    from ..scenes.questions import answer_values

    given, prior = load_answer_index(answers), load_answer_index(prior_answers)
    counts: dict[str, list[int]] = {}
    for qid, question in read_official_questions(gold_file).items():
        key, attribute = answer_key(qid), question["types"]["semantic"]
        if key not in given or key not in prior:
            raise LabBpoError(f"{answers if key not in given else prior_answers}: no answer to question {qid}")
        said = llava_normalize(answer_text(given[key], answers))
        if said == question["answer"]:
            continue
        follows = said == llava_normalize(answer_text(prior[key], prior_answers))
        for group in (attribute, "all"):
            tally = counts.setdefault(group, [0, 0, 0])
            tally[0] += 1
            tally[1] += follows
            tally[2] += said not in answer_values(attribute)
    order = [a for a in (*world.ATTRIBUTES, "all") if a in counts]
    return {g: {"wrong": counts[g][0], "prior": counts[g][1], "share": 100.0 * counts[g][1] / counts[g][0],
                "foreign": counts[g][2]} for g in order}  # fmt: skip


def table(runs: list[dict]) -> str:
    """Markdown: per attribute, held-out accuracy and the prior-following share of the wrong answers
    (against the model's own grey-picture answers) before and after BPO, and the foreign answers,
    each mean ± sample std over the runs (`lab_bpo`'s scores, one per seed)."""
    from ..scenes.questions import answer_values
    from .mllm import mean_std

    def cell(when: str, key: str, attribute: str, field: str | None = None) -> str:
        values = [r[when][key].get(attribute) for r in runs]
        return mean_std([v if field is None or v is None else v[field] for v in values])

    lines = [f"n = {len(runs)}; accuracy and prior share in %, foreign answers as counts", "",
             "| attribute | accuracy before | after | prior share before | after | foreign before | after | chance |",
             "|---" * 8 + "|"]  # fmt: skip
    for attribute in (*world.ATTRIBUTES, "all"):
        chance = f"{100 / len(answer_values(attribute)):.0f}" if attribute != "all" else ""
        accuracy = [cell(w, "accuracy", attribute) if attribute != "all" else "" for w in ("before", "after")]
        share = [cell(w, "prior_own", attribute, "share") for w in ("before", "after")]
        foreign = [cell(w, "prior_own", attribute, "foreign") for w in ("before", "after")]
        lines.append(f"| {attribute} | " + " | ".join([*accuracy, *share, *foreign, chance]) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Steps


def _negatives(out: Path, data: Path, config: LabBpoConfig) -> None:
    from ..preference.negatives import NegativesJob, negatives

    if (out / "pairs.jsonl").exists():  # made, but the manifest was not written: keep it
        return
    seeds, images, made = out / "seeds.jsonl", data / "images", out / "pairs.jsonl"
    if config.negative_picture == "grey":
        seeds, images, made = out / "seeds-grey.jsonl", out / "grey" / "images", out / "pairs-grey.jsonl"
        _with_picture(out / "seeds.jsonl", seeds, GREY_PICTURE)
    if not made.exists():
        negatives(NegativesJob(
            seeds, made, neg_types=tuple(config.neg_types), model=config.model, image_folder=str(images),
            device="cpu", dtype="float32", corruption=config.corruption, noise_step=config.noise_step,
            mask_ratio=config.mask_ratio, target=config.weaken_tower, seed=config.seed, temperature=config.temperature,
            max_new_tokens=config.max_new_tokens, rewriter="rule" if "llm-hal" in config.neg_types else None,
            progress=config.progress,
        ))  # fmt: skip
    if config.negative_picture == "grey":
        _with_picture(made, out / "pairs.jsonl", None, originals=out / "seeds.jsonl")


def _with_picture(source: Path, target: Path, picture: str | None, originals: Path | None = None) -> None:
    """`source`'s JSONL records with every `image` set to `picture`, or (picture None) back to the
    image of the `originals` seed each record's id starts with (a pair's id is `seed-id#neg-type`)."""
    records = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    if picture is None:
        image = {s["id"]: s["image"] for s in map(json.loads, originals.read_text().splitlines())}
        records = [{**r, "image": image[r["id"].split("#")[0]]} for r in records]
    else:
        records = [{**r, "image": picture} for r in records]
    write_text_atomic(target, "".join(json.dumps(r) + "\n" for r in records))


def _score(out: Path, when: str, model: Path, data: Path, config: LabBpoConfig, manifest: dict) -> None:
    """Held-out accuracy per attribute (as `lab run` scores it) and the prior-following shares: against
    this model's own grey-picture answers and, after BPO, against the starting model's too."""
    from ..benchmarks.gqa import OFFICIAL_QUESTIONS
    from .mllm import LabConfig, heldout_accuracy

    lab = LabConfig(out=str(out), threads=config.threads, progress=config.progress)
    folder = out / when
    accuracy = heldout_accuracy(model, data / "heldout", folder / "heldout", lab)
    heldout_accuracy(model, out / "grey", folder / "grey", lab)
    answers, gold = folder / "heldout" / "answers.jsonl", data / "heldout" / OFFICIAL_QUESTIONS
    scores = {"accuracy": accuracy, "prior_own": prior_following(answers, folder / "grey" / "answers.jsonl", gold)}
    if when == "after":
        scores["prior_start"] = prior_following(answers, out / "before" / "grey" / "answers.jsonl", gold)
    manifest["scores"][when] = scores


def preference_config(out: Path, data: Path, config: LabBpoConfig) -> dict:
    """configs/base/preference.yaml's recipe at the toy's size, on CPU (no DeepSpeed, no checkpointing)."""
    pairs = sum(1 for line in (out / "pairs.jsonl").read_text().splitlines() if line.strip())
    steps = max(1, int(-(-pairs // config.batch_size) * config.epochs))
    return {
        "name": "lab-bpo",
        "model": {"init_from": str(Path(config.model).resolve())},
        "data": {"data_path": str(out / "pairs.jsonl"), "image_folder": str(data / "images"),
                 "template": "vicuna_v1", "image_aspect_ratio": "pad", "max_length": 512,
                 "group_by_modality_length": True, "cache_dir": str(out / "cache"), "num_proc": 1},
        "train": {"stage": "preference", "output_dir": str(out / "preference"),
                  "global_batch_size": config.batch_size, "per_device_batch_size": config.batch_size,
                  "learning_rate": config.learning_rate, "weight_decay": 0.0, "warmup_ratio": 0.03,
                  "lr_scheduler": "cosine", "num_epochs": config.epochs, "gradient_checkpointing": False,
                  "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": 0.05,
                           "target_modules": "all-linear"},
                  "preference": {"beta": config.beta, "loss_type": "sigmoid", "reference": "lora_disabled",
                                 "nll_weight": config.nll_weight},
                  "seed": config.seed, "save_steps": max(1, steps // 2), "save_total_limit": 1,
                  "report_to": "none", "dataloader_num_workers": 0, "cpu_threads": config.threads},
    }  # fmt: skip


def _preference(out: Path, data: Path, config: LabBpoConfig) -> None:
    import yaml

    from ..training.config import load_run_config
    from ..training.run import finish_distributed, train

    path = out / "preference.yaml"
    header = f"# The lab's BPO preference stage. Run it by hand with: mof-llava train {path}\n"
    write_text_atomic(path, header + yaml.safe_dump(preference_config(out, data, config), sort_keys=False))
    try:
        train(load_run_config(path))  # resumes from its newest checkpoint if an earlier call died
    finally:
        finish_distributed()


def _merge(out: Path) -> None:
    from ..training.lora_merge import merge_lora

    merge_lora(out / "preference", out / "model")


# ---------------------------------------------------------------------------------------------
# Bookkeeping


def _check_data(data: Path) -> Path:
    from ..benchmarks.gqa import LLAVA_QUESTIONS

    for needed in ("stage2_instruct.json", "images", f"heldout/{LLAVA_QUESTIONS}"):
        if not (data / needed).exists():
            raise LabBpoError(f"{data}: no {needed} there (give a `lab run` data folder)")
    return data


_NOT_COMPARED = ("out", "progress", "threads")


def _open_manifest(out: Path, config: LabBpoConfig) -> dict:
    from .mllm import open_manifest

    settings = {k: v for k, v in asdict(config).items() if k not in _NOT_COMPARED}
    settings["model"] = str(Path(config.model).resolve())
    settings["data"] = str(Path(config.data).resolve())
    manifest = open_manifest(out / MANIFEST, settings, LabBpoError, "a lab BPO run", added_later={"weaken_tower": "both"})
    manifest.setdefault("scores", {})
    return manifest


def _finish(out: Path, manifest: dict, step: str) -> None:
    from .mllm import write_manifest

    write_manifest(out / MANIFEST, manifest, step)
