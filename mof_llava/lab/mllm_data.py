"""The lab MLLM's data, in the demo's folder layout (`demo.synthetic.dataset_paths`), so the demo's
run-config writer and MMVP evaluation read it as they read the demo's:

    images/pretrain/<n>.png, images/instruct/<n>.png   training pictures (lossless: 1 px details)
    stage1_pretrain.json       LLaVA-Pretrain format: an instruction and `world.caption` (kinds only)
    stage2_instruct.json       LLaVA-1.5 mix format: two to four rounds about every attribute
    mmvp/                      the toy MMVP: `mine export-mmvp` of world pairs, questions filled in
    mmvp_patterns.csv          Index,Pattern (the attribute the pair differs in)
    heldout/                   both pictures of more pairs (another seed stream), each asked its
                               pair's question for a short answer, as a GQA folder (`write_heldout`):
                               the GQA runner scores it, per attribute as the semantic type

Training picture i shows one side of a `world.attribute_pair` for attribute i mod 9, so every
question applies equally often; its first round asks about that attribute. Everything is a function
of the seed: each picture and pair has its own generator, seeded by (seed, stream, i).

`colour_prior` (`LabConfig`'s) gives the training data a text prior the evaluation pictures break:
with that probability a training picture whose main kind is a circle is redrawn with red circles,
so the training texts (both stages, and the language pre-training made from them) say "red circle"
more often than the uniform held-out, toy MMVP and evaluation pictures show.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic import write_text_atomic
from ..demo.synthetic import SyntheticDataset, dataset_paths
from ..scenes import questions
from . import world

_STREAMS = {"pretrain": 101, "instruct": 102, "mmvp": 103, "heldout": 104, "probe": 106}
_PRIOR_STREAM = 105  # the prior's own draws, so the pictures' and texts' generators stay as they were
PRIOR_SHAPE, PRIOR_COLOUR = "circle", "red"


def stream_rng(seed: int, stream: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[stream], index])


def training_scene(
    seed: int, stream: str, index: int, colour_prior: float = 0.0
) -> tuple[str, world.LabScene, np.random.Generator]:
    """(attribute, picture, generator for its text) of training picture `index`."""
    rng = stream_rng(seed, stream, index)
    attribute = world.ATTRIBUTES[index % len(world.ATTRIBUTES)]
    pair = world.attribute_pair(rng, attribute)
    scene = pair[int(rng.integers(2))]
    if colour_prior > 0 and scene.main[0].shape == PRIOR_SHAPE:
        draw = np.random.default_rng([seed, _PRIOR_STREAM, _STREAMS[stream], index])
        if draw.random() < colour_prior:
            scene = with_prior_colour(scene)
    return attribute, scene, rng


def with_prior_colour(scene: world.LabScene) -> world.LabScene:
    """The scene with its main kind in the prior's colour; a companion of that colour takes the
    main kind's old one, so the two kinds still differ in colour as `world.random_scene` draws them."""
    old = scene.main[0].colour
    main = tuple(replace(t, colour=PRIOR_COLOUR) for t in scene.main)
    companion = scene.companion
    if companion is not None and companion.colour == PRIOR_COLOUR:
        companion = replace(companion, colour=old)
    return replace(scene, main=main, companion=companion)


def write_training_files(
    paths: SyntheticDataset, seed: int, pretrain: int, instruct: int, letter_share: float,
    captioned_share: float, colour_prior: float = 0.0,
) -> None:  # fmt: skip
    """The training pictures and both stages' records; the shares and the prior are `LabConfig`'s."""
    if not 0.0 <= colour_prior <= 1.0:
        raise ValueError(f"colour_prior {colour_prior}: a probability, between 0 and 1")
    for stream, n, out in (
        ("pretrain", pretrain, paths.pretrain_file),
        ("instruct", instruct, paths.instruct_file),
    ):
        records = []
        for i in range(n):
            attribute, scene, rng = training_scene(seed, stream, i, colour_prior)
            image = f"{stream}/{i:06d}.png"
            _save(scene, paths.image_folder / image)
            if stream == "pretrain":
                records.append(questions.pretrain_record(f"{stream}-{i:06d}", image, scene, rng))
            else:
                record = questions.instruct_record(
                    f"{stream}-{i:06d}", image, scene, rng, attribute, letter_share, captioned_share
                )
                records.append(record)
        write_text_atomic(out, json.dumps(records, indent=1) + "\n")


def benchmark_pairs(seed: int, stream: str, n: int) -> list[tuple[str, world.LabScene, world.LabScene, bool]]:
    """n pairs cycling through the attributes: (attribute, scene a, scene b, whether a comes first)."""
    out = []
    for k in range(n):
        rng = stream_rng(seed, stream, k)
        attribute = world.ATTRIBUTES[k % len(world.ATTRIBUTES)]
        a, b = world.attribute_pair(rng, attribute)
        out.append((attribute, a, b, bool(rng.random() < 0.5)))
    return out


def write_benchmark(folder: Path, patterns_file: Path, pairs, towers: Path) -> None:
    """An MMVP-format folder through `mine export-mmvp`'s writer: the pictures and a pairs CSV (with
    the towers' global cosines) go in, the question columns are filled in from the scenes."""
    from ..mining.export import export_mmvp
    from ..mining.pairs import CSV_COLUMNS

    source = folder.parent / f".{folder.name}-pairs"
    rows = []
    for k, (_, a, b, a_first) in enumerate(pairs):
        first, second = (a, b) if a_first else (b, a)
        for side, scene in (("a", first), ("b", second)):
            _save(scene, source / f"{k:04d}{side}.png")
        rows.append([f"{k:04d}a.png", f"{k:04d}b.png"])
    cosines = global_cosines(towers, [(p[1], p[2]) for p in pairs])
    _write_csv(source / "pairs.csv", CSV_COLUMNS, [r + list(c) for r, c in zip(rows, cosines)])
    export_mmvp(source / "pairs.csv", folder, source, top=len(pairs))
    questions_rows, pattern_rows = [], []
    for k, (attribute, a, b, a_first) in enumerate(pairs):
        first, second = (a, b) if a_first else (b, a)
        options = (questions.value(first, attribute), questions.value(second, attribute))
        text = f"(a) {options[0].capitalize()} (b) {options[1].capitalize()}"
        for member, answer in ((1, "(a)"), (2, "(b)")):
            questions_rows.append([2 * k + member, questions.ask(a, attribute), text, answer])
            pattern_rows.append([2 * k + member, attribute])
    _write_csv(folder / "Questions.csv", ["Index", "Question", "Options", "Correct Answer"], questions_rows)
    _write_csv(patterns_file, ["Index", "Pattern"], pattern_rows)


def global_cosines(towers: Path, pairs: list[tuple[world.LabScene, world.LabScene]]) -> list[tuple[str, str]]:
    """CLIP and SSL cosine of each pair's global embeddings (what `mine pairs` compares)."""
    import torch.nn.functional as F

    from .measure import features, load_towers

    loaded = load_towers(str(towers / "clip"), str(towers / "ssl"))
    cos = {}
    for name, (tower, global_model) in loaded.items():
        fa = features(tower, global_model, [p[0] for p in pairs])["global"]
        fb = features(tower, global_model, [p[1] for p in pairs])["global"]
        cos[name] = F.cosine_similarity(fa, fb, dim=-1).tolist()
    return [(f"{c:.6f}", f"{d:.6f}") for c, d in zip(cos["clip"], cos["ssl"])]


def write_heldout(folder: Path, pairs) -> None:
    """Both pictures of each pair, asked the pair's question for a short answer, in GQA's layout
    (`benchmarks.gqa`: the official questions file with the gold answers, LLaVA's question list,
    images/): every question balanced, its semantic type the attribute, so the GQA scorer's
    per-semantic-type accuracy is the per-attribute question accuracy."""
    from ..benchmarks.gqa import LLAVA_QUESTIONS, OFFICIAL_QUESTIONS
    from ..prompts import SHORT_ANSWER

    gold, listed = {}, []
    for k, (attribute, a, b, _) in enumerate(pairs):
        question = questions.ask(a, attribute)
        for side, scene in (("a", a), ("b", b)):
            qid, image = f"{k:04d}{side}", f"{k:04d}{side}.png"
            _save(scene, folder / "images" / image)
            gold[qid] = {"question": question, "answer": questions.value(scene, attribute), "imageId": qid,
                         "isBalanced": True, "types": {"structural": "query", "semantic": attribute},
                         "semantic": [], "groups": {"global": attribute}}  # fmt: skip
            listed.append({"question_id": qid, "image": image, "text": f"{question}\n{SHORT_ANSWER}"})
    write_text_atomic(folder / OFFICIAL_QUESTIONS, json.dumps(gold, indent=1) + "\n")
    write_text_atomic(folder / LLAVA_QUESTIONS, "".join(json.dumps(q) + "\n" for q in listed))


def write_lab_data(
    root: Path, seed: int, samples: int, mmvp_pairs: int, heldout_pairs: int, towers: Path,
    letter_share: float, captioned_share: float, colour_prior: float = 0.0,
) -> SyntheticDataset:  # fmt: skip
    """Everything the MLLM runs read (see the module docstring); returns the data's paths."""
    paths = dataset_paths(root)
    write_training_files(paths, seed, samples, samples, letter_share, captioned_share, colour_prior)
    write_benchmark(paths.mmvp_dir, paths.mmvp_patterns, benchmark_pairs(seed, "mmvp", mmvp_pairs), towers)
    write_heldout(root / "heldout", benchmark_pairs(seed, "heldout", heldout_pairs))
    return paths


def _save(scene: world.LabScene, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.render().save(path, format="PNG")


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
