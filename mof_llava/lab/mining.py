"""Mining and MMVP-VLM on the toy towers (docs/toy-lab.md, "Mining on the toy towers").

`lab_mine(LabMineConfig(towers=..., out=...))` runs the library's own mining verbs on lab scenes
whose every attribute is known, and reads from the metadata what the mined pairs differ in:

    out/pool/images/<n>.png, pool.json   random scenes and both sides of attribute pairs
    out/emb/                             `mine embed` with the folder's clip/ and ssl/ towers
    out/pairs.csv, out/clip-pairs.csv    `mine pairs`: CLIP and SSL thresholds / CLIP's alone
    out/mmvp-mined/                      `mine export-mmvp` of the top mined pairs
    out/mmvp-vlm/                        attribute pairs with statements, in MMVP-VLM's format
    out/scorer-clip/                     the toy CLIP with a tokenizer of its caption words
    out/mmvp-vlm-clip/                   the toy CLIP scored there (`eval run mmvp-vlm`'s runner)
    out/lab_mine.json                    the shares below and the per-pattern scores

The towers' cosines live on other scales than real CLIP's and DINOv2's, so the thresholds are
quantiles of each tower's own random-pair cosines (`mine pairs --clip-min-quantile/--dino-max-quantile`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic
from ..scenes import questions
from . import world
from .towers import INFO_FILE, LabError

POOL_FILE = "pool.json"
UNCAPTIONED = tuple(a for a in world.ATTRIBUTES if a not in world.CAPTIONED)
_STREAMS = {"pool-random": 201, "pool-pairs": 202, "random-pairs": 203, "vlm": 204}


@dataclass(frozen=True)
class LabMineConfig:
    towers: str  # a `lab towers` folder holding clip/ and ssl/
    out: str
    pool: int = 2000  # pictures mined
    pair_share: float = 0.5  # of the pool: both sides of attribute pairs, the rest random scenes
    seed: int | None = None  # of the scenes; default: the towers' seed
    clip_quantile: float = 0.99  # CLIP cos above this quantile of random pairs (the top 1 %)
    ssl_quantile: float = 0.5  # SSL cos below its random-pair median
    random_pairs: int = 20_000  # the yardstick the mined shares are compared with
    export_top: int = 30
    vlm_pairs: int = 20  # MMVP-VLM pairs per attribute
    threads: int = 1


# ---------------------------------------------------------------------------------------------
# The pool


def pool_entries(seed: int, size: int, pair_share: float) -> list[dict]:
    """Image id, where it came from (`random`, or `pair` with its attribute and pair index) and the
    scene; pair k's two sides are entries 2k and 2k + 1, its attribute the k-th in turn."""
    pairs = int(size * pair_share) // 2
    entries = []
    for k in range(pairs):
        attribute = world.ATTRIBUTES[k % len(world.ATTRIBUTES)]
        rng = np.random.default_rng([seed, _STREAMS["pool-pairs"], k])
        for scene in world.attribute_pair(rng, attribute):
            entries.append({"source": "pair", "attribute": attribute, "pair": k, "scene": scene})
    for i in range(size - 2 * pairs):
        scene = world.random_scene(np.random.default_rng([seed, _STREAMS["pool-random"], i]))
        entries.append({"source": "random", "attribute": None, "pair": None, "scene": scene})
    for n, entry in enumerate(entries):
        entry["id"] = f"{n:06d}.png"
    return entries


def write_pool(folder: Path, seed: int, size: int, pair_share: float) -> list[dict]:
    entries = pool_entries(seed, size, pair_share)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for entry in entries:
        entry["scene"].render().save(folder / "images" / entry["id"], format="PNG")
    records = [{**e, "scene": e["scene"].to_json()} for e in entries]
    write_json_atomic(folder / POOL_FILE, {"seed": seed, "images": records}, indent=1)
    return entries


def read_pool(folder: Path) -> dict[str, dict]:
    """{image id: entry with its `LabScene`} from pool.json."""
    path = Path(folder) / POOL_FILE
    try:
        records = json.loads(path.read_text())["images"]
        return {r["id"]: {**r, "scene": world.LabScene.from_json(r["scene"])} for r in records}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LabError(f"{path}: not a lab pool file ({type(err).__name__}: {err})") from None


# ---------------------------------------------------------------------------------------------
# What a set of pairs differs in


def same_kinds(a: world.LabScene, b: world.LabScene) -> bool:
    """Both name the same kinds in a caption: main colour and shape, and the companion's (or none)."""

    def kinds(scene):
        other = scene.companion
        return (scene.main[0].colour, scene.main[0].shape, other and (other.colour, other.shape))

    return kinds(a) == kinds(b)


def differs(a: world.LabScene, b: world.LabScene, attribute: str) -> bool:
    return world.labels(a)[attribute] != world.labels(b)[attribute]


def pair_shares(pairs: list[tuple[world.LabScene, world.LabScene]]) -> dict:
    """`uncaptioned_only`: the share of pairs whose kinds are the same (so a caption cannot tell
    them apart); `per_attribute`: the share of pairs with the same kinds that differ in each
    uncaptioned attribute (a pair may differ in several); `background`: the share of all pairs
    whose backgrounds differ (never captioned, not one of the probed attributes)."""
    n = len(pairs)
    if not n:
        return {"pairs": 0, "uncaptioned_only": None, "per_attribute": None, "background": None}
    alike = [(a, b) for a, b in pairs if same_kinds(a, b)]
    per = {attr: sum(differs(a, b, attr) for a, b in alike) / n for attr in UNCAPTIONED}
    background = sum(a.background != b.background for a, b in pairs) / n
    return {"pairs": n, "uncaptioned_only": len(alike) / n, "per_attribute": per, "background": background}


def planted_recall(pool: dict[str, dict], found: set[frozenset[str]]) -> dict[str, float]:
    """Per attribute, the share of the pool's attribute pairs that are among `found`."""
    sides: dict[int, list[dict]] = {}
    for entry in pool.values():
        if entry["source"] == "pair":
            sides.setdefault(entry["pair"], []).append(entry)
    hits: dict[str, list[bool]] = {}
    for members in sides.values():
        hit = frozenset(e["id"] for e in members) in found
        hits.setdefault(members[0]["attribute"], []).append(hit)
    return {attr: float(np.mean(hits[attr])) for attr in world.ATTRIBUTES if attr in hits}


def random_pairs(ids: list[str], count: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng([seed, _STREAMS["random-pairs"]])
    a = rng.integers(len(ids), size=count)
    b = (a + rng.integers(1, len(ids), size=count)) % len(ids)  # any other image
    return [(ids[i], ids[j]) for i, j in zip(a, b)]


def read_csv_pairs(path: Path) -> list[tuple[str, str]]:
    from ..mining.pairs import read_pairs_csv

    frame = read_pairs_csv(path)
    return list(zip(frame["image_a"], frame["image_b"]))


# ---------------------------------------------------------------------------------------------
# Mining with the library's verbs


def mine_pool(cfg: LabMineConfig, out: Path, towers: Path) -> dict:
    """`mine embed`, then `mine pairs` with quantile thresholds (both towers, and CLIP's alone)."""
    from ..mining import api as mine
    from ..mining.embed import EmbedConfig
    from ..mining.pairs import PairCriteria
    from ..mining.search import SearchConfig
    from ..mining.towers import EmbeddingTowerSpec

    specs = [
        EmbeddingTowerSpec("clip", str(towers / "clip")),
        EmbeddingTowerSpec("dinov2", str(towers / "ssl")),
    ]
    embed = EmbedConfig(towers=specs, batch_size=256, workers=0, device="cpu", threads=cfg.threads)
    mine.embed(mine.EmbedJob(out / "pool" / "images", out / "emb", embed))
    # duplicate_tol 0: the pool has no stored duplicates, and a pair both towers see as one is data here
    both = PairCriteria(
        clip_min_quantile=cfg.clip_quantile, dino_max_quantile=cfg.ssl_quantile, duplicate_tol=0.0
    )
    clip_only = PairCriteria(clip_min_quantile=cfg.clip_quantile, dino_max=1.0, duplicate_tol=0.0)
    search = SearchConfig(method="exact", seed=0)
    results = {}
    for name, criteria in (("pairs", both), ("clip-pairs", clip_only)):
        result = mine.pairs(
            mine.PairsJob(out / f"{name}.csv", embeddings=out / "emb", criteria=criteria, search=search)
        )
        results[name] = result.summary
    kept = results["pairs"]["stats"]["kept"]
    shutil.rmtree(out / "mmvp-mined", ignore_errors=True)  # never a previous run's export beside these pairs
    if kept:
        top = min(cfg.export_top, kept)
        mine.export(mine.ExportJob(out / "pairs.csv", out / "mmvp-mined", top=top))
    return results


def mining_report(pool: dict[str, dict], out: Path, seed: int, random_count: int) -> dict:
    scenes = {k: v["scene"] for k, v in pool.items()}
    sets = {
        "random": random_pairs(sorted(pool), random_count, seed),
        "clip_only": read_csv_pairs(out / "clip-pairs.csv"),
        "mined": read_csv_pairs(out / "pairs.csv"),
    }
    report = {name: pair_shares([(scenes[a], scenes[b]) for a, b in ids]) for name, ids in sets.items()}
    for name in ("clip_only", "mined"):
        report[name]["planted_recall"] = planted_recall(pool, {frozenset(p) for p in sets[name]})
    return report


# ---------------------------------------------------------------------------------------------
# MMVP-VLM of the toy CLIP


def write_mmvp_vlm(folder: Path, seed: int, per_attribute: int) -> None:
    """Pairs of every attribute in MMVP-VLM's layout: `Questions.csv` (Question ID, Type, Statement;
    the type is the attribute) and `MLLM_VLM Images/<type>/<id>.jpg`; the odd id is image 1."""
    import csv

    from ..benchmarks.mmvp_vlm import IMAGE_DIR, QUESTIONS_CSV

    rows, qid = [], 1
    for k in range(per_attribute * len(world.ATTRIBUTES)):
        attribute = world.ATTRIBUTES[k % len(world.ATTRIBUTES)]
        rng = np.random.default_rng([seed, _STREAMS["vlm"], k])
        pair = world.attribute_pair(rng, attribute)
        if rng.random() < 0.5:
            pair = pair[::-1]
        for scene in pair:
            path = folder / IMAGE_DIR / attribute / f"{qid}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            scene.render().save(path, format="JPEG", quality=95)
            rows.append([qid, attribute, questions.statement(scene, attribute)])
            qid += 1
    with open(folder / QUESTIONS_CSV, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["Question ID", "Type", "Statement"], *rows])


def write_scorer(clip: Path, folder: Path) -> None:
    """The toy CLIP with a tokenizer, so the MMVP-VLM runner loads it like any CLIP folder: words
    of its caption vocabulary (vocab.json) are kept, every other word is dropped (the text tower
    has no embedding for it), then `<bos> ... <eos>` as in training."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import CLIPImageProcessor, CLIPProcessor, PreTrainedTokenizerFast

    vocab = json.loads((clip / "vocab.json").read_text())
    words = "|".join(w for w in vocab if not w.startswith("<"))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"[^\w\s]"), " "),
            normalizers.Replace(Regex(rf"\b(?!(?:{words})\b)\w+"), ""),
        ]  # fmt: skip
    )
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(clip / name, folder / name)
    CLIPProcessor(image_processor=CLIPImageProcessor.from_pretrained(clip), tokenizer=fast).save_pretrained(
        folder
    )


def score_mmvp_vlm(clip: Path, data: Path, out: Path, threads: int) -> dict:
    """The project's MMVP-VLM runner on the toy CLIP; {pattern: accuracy}, the average, pairs."""
    from ..benchmarks import mmvp_vlm
    from ..benchmarks.evaluate import EvalConfig, evaluate
    from ..benchmarks.runner import Distributed

    scorer = out / "scorer-clip"
    write_scorer(clip, scorer)
    config = EvalConfig(benchmark="mmvp-vlm", options=mmvp_vlm.MMVPVLMOptions(data=data), model=scorer,
                        output_dir=out / "mmvp-vlm-clip", device="cpu", threads=threads, batch_size=32,
                        no_progress=True, dist=Distributed())  # fmt: skip
    metrics = evaluate(config).metrics
    return {
        "average": metrics["average"],
        "pairs_correct": metrics["pairs_correct"],
        "pairs": metrics["pairs"],
        "per_pattern": {p: v["accuracy"] for p, v in metrics["per_pattern"].items()},
    }


# ---------------------------------------------------------------------------------------------
# The whole run


def lab_mine(cfg: LabMineConfig, say=print) -> dict:
    """Pool, mining, shares, export and MMVP-VLM for one towers folder; the report is also
    written to out/lab_mine.json."""
    towers, out = Path(cfg.towers), Path(cfg.out)
    missing = [t for t in ("clip", "ssl") if not (towers / t / INFO_FILE).is_file()]
    if missing:
        raise LabError(
            f"{towers}: no trained {' or '.join(missing)} tower there (run `mof-llava lab towers`)"
        )
    if not 0 <= cfg.pair_share <= 1 or cfg.pool < 4:
        raise LabError(f"pool {cfg.pool} (>= 4) and pair_share {cfg.pair_share} (0-1): out of range")
    seed = cfg.seed if cfg.seed is not None else json.loads((towers / "clip" / INFO_FILE).read_text())["seed"]
    if not (out / "pool" / POOL_FILE).is_file():
        say(f"writing a pool of {cfg.pool} scenes (seed {seed})")
        write_pool(out / "pool", seed, cfg.pool, cfg.pair_share)
    pool = read_pool(out / "pool")
    stored = json.loads((out / "pool" / POOL_FILE).read_text())["seed"]
    if (stored, len(pool)) != (seed, cfg.pool):
        raise LabError(f"{out / 'pool' / POOL_FILE}: a pool of {len(pool)} scenes of seed {stored}, not "
                       f"{cfg.pool} of seed {seed}; choose a new --out")  # fmt: skip
    say("mining: mine embed, mine pairs")
    summaries = mine_pool(cfg, out, towers)
    kept = {name: summaries[name]["stats"]["kept"] for name in ("pairs", "clip-pairs")}
    report = {"config": asdict(cfg), "seed": seed, "thresholds": summaries["pairs"]["criteria"],
              "kept": kept["pairs"], "clip_pairs": kept["clip-pairs"],
              "shares": mining_report(pool, out, seed, cfg.random_pairs)}  # fmt: skip
    say("MMVP-VLM of the toy CLIP")
    shutil.rmtree(out / "mmvp-vlm", ignore_errors=True)
    write_mmvp_vlm(out / "mmvp-vlm", seed, cfg.vlm_pairs)
    shutil.rmtree(out / "mmvp-vlm-clip", ignore_errors=True)
    report["mmvp_vlm"] = score_mmvp_vlm(towers / "clip", out / "mmvp-vlm", out, cfg.threads)
    write_json_atomic(out / "lab_mine.json", report, indent=1)
    return report
