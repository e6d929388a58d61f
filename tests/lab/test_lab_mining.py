"""Mining on the toy towers: the pool's metadata, what a set of pairs differs in, quantile
thresholds of `mine pairs`, the toy CLIP through the mining and MMVP-VLM loaders, and `lab mine`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mof_llava.lab import mining, world
from mof_llava.mining import api as mine
from mof_llava.mining.errors import MiningError
from mof_llava.mining.pairs import PairCriteria
from mof_llava.scenes.drawing import Thing

TOWERS = Path(__file__).resolve().parents[2] / "assets" / "toy-lab" / "seed0"


def test_the_pool_s_metadata_round_trips_and_pairs_differ_in_their_attribute(tmp_path):
    written = mining.write_pool(tmp_path, seed=3, size=22, pair_share=0.9)
    read = mining.read_pool(tmp_path)
    assert sorted(read) == [e["id"] for e in written] == [f"{n:06d}.png" for n in range(22)]
    assert [e["source"] for e in written].count("pair") == 18  # 9 pairs: one per attribute
    for entry in written:
        again = read[entry["id"]]
        assert again["scene"] == entry["scene"]
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "images" / entry["id"])), entry["scene"].pixels()
        )
    for k in range(9):
        a, b = read[f"{2 * k:06d}.png"], read[f"{2 * k + 1:06d}.png"]
        assert a["pair"] == b["pair"] == k and a["attribute"] == world.ATTRIBUTES[k]
        assert mining.differs(a["scene"], b["scene"], a["attribute"])
    (tmp_path / mining.POOL_FILE).write_text("{}")
    with pytest.raises(mining.LabError, match="pool.json: not a lab pool file"):
        mining.read_pool(tmp_path)


def _scene(colour="red", shape="circle", x=10.0, companion=None, background="grey", dot=False):
    return world.LabScene(background, (Thing(shape, colour, (x, 20.0), 9, None, True, dot),), companion)


def test_uncaptioned_share_on_hand_made_pairs():
    blue_square = Thing("square", "blue", (36.0, 36.0), 12)
    base = _scene()
    pairs = [
        (base, _scene(x=38.0)),  # same kinds, other half: position
        (base, _scene(dot=True, background="slate")),  # same kinds: detail; background differs
        (base, _scene(colour="green")),  # captioned: colour
        (base, _scene(shape="square")),  # captioned: shape
        (base, _scene(companion=blue_square)),  # a companion is a kind more
        (
            _scene(companion=blue_square),
            _scene(x=40.0, companion=blue_square),
        ),  # same kinds: position, relation
    ]
    shares = mining.pair_shares(pairs)
    assert shares["pairs"] == 6
    assert shares["uncaptioned_only"] == pytest.approx(3 / 6)
    assert shares["per_attribute"] == pytest.approx(
        {
            "count": 0,
            "position": 2 / 6,
            "relation": 1 / 6,
            "size": 0,
            "orientation": 0,
            "fill": 0,
            "detail": 1 / 6,
        }
    )
    assert shares["background"] == pytest.approx(1 / 6)
    assert mining.pair_shares([])["uncaptioned_only"] is None


def _rows(tmp_path, n=20, dim=8):
    rng = np.random.default_rng(5)
    clip, dino = rng.normal(size=(n, dim)), rng.normal(size=(n, dim))
    np.save(tmp_path / "clip.npy", clip)
    np.save(tmp_path / "dino.npy", dino)
    (tmp_path / "ids.txt").write_text("".join(f"img{i}.png\n" for i in range(n)))
    unit = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in (clip, dino)]
    a, b = np.triu_indices(n, 1)
    return a, b, [np.einsum("ij,ij->i", u[a], u[b]) for u in unit]


def _pairs_job(tmp_path, name, criteria):
    files = {
        k: tmp_path / f for k, f in (("clip_npy", "clip.npy"), ("dino_npy", "dino.npy"), ("ids", "ids.txt"))
    }
    return mine.PairsJob(tmp_path / name, criteria=criteria, **files)


def _kept(path):
    with open(path) as f:
        return {(r["image_a"], r["image_b"]) for r in csv.DictReader(f)}


def test_quantile_thresholds_keep_the_share_they_name(tmp_path):
    a, b, (clip, dino) = _rows(tmp_path)  # 20 rows: 190 pairs, all read (fewer than quantile_pairs)
    names = [(f"img{i}.png", f"img{j}.png") for i, j in zip(a, b)]
    # The 0.9 quantile of 190 values lies between the 171st and 172nd smallest: the top 19 pass.
    result = mine.pairs(_pairs_job(tmp_path, "top.csv", PairCriteria(clip_min_quantile=0.9, dino_max=1.0)))
    assert _kept(tmp_path / "top.csv") == {names[k] for k in np.argsort(clip)[-19:]}
    assert (
        result.summary["quantile_thresholds"]["every_pair"]
        and result.summary["quantile_thresholds"]["pairs"] == 190
    )
    assert "thresholds from every pair: CLIP cos >= " in result.describe()
    # Every pair passes CLIP at quantile 0; the DINOv2 median keeps the 95 least similar.
    mine.pairs(_pairs_job(tmp_path, "low.csv", PairCriteria(clip_min_quantile=0.0, dino_max_quantile=0.5)))
    assert _kept(tmp_path / "low.csv") == {names[k] for k in np.argsort(dino)[:95]}
    sampled = mine.pairs(
        _pairs_job(tmp_path, "s.csv", PairCriteria(clip_min_quantile=0.5, quantile_pairs=50))
    )
    assert sampled.summary["quantile_thresholds"]["pairs"] == 50
    assert not sampled.summary["quantile_thresholds"]["every_pair"]
    with pytest.raises(MiningError, match="clip_min_quantile must be a quantile between 0 and 1, got 1.5"):
        PairCriteria(clip_min_quantile=1.5)
    # the search itself never runs on unresolved quantiles (it would search with clip_min instead)
    from mof_llava.mining.pairs import find_blind_pairs

    with pytest.raises(MiningError, match="resolve them first"):
        find_blind_pairs(None, None, [], PairCriteria(clip_min_quantile=0.9))  # refused before any read


def test_quantile_flags_of_mine_pairs(tmp_path, capsys):
    from mof_llava.cli import main as cli

    a, b, (clip, _) = _rows(tmp_path)
    files = ["--clip-npy", str(tmp_path / "clip.npy"), "--dino-npy", str(tmp_path / "dino.npy")]
    out = tmp_path / "p.csv"
    argv = ["mine", "pairs", *files, "--ids", str(tmp_path / "ids.txt"), "-o", str(out)]
    assert cli([*argv, "--clip-min-quantile", "0.95", "--dino-max", "1"]) == 0
    assert len(_kept(out)) == 10  # 0.95 * 189 = 179.55: the top 10 of 190
    summary = json.loads(out.with_name("p.summary.json").read_text())
    assert summary["criteria"]["clip_min"] == pytest.approx(np.quantile(clip, 0.95), abs=1e-9)


def test_the_toy_clip_embeds_through_mining_as_clip_compares_images():
    import torch
    from transformers import CLIPModel

    from mof_llava.lab.towers import normalise
    from mof_llava.mining.towers import EmbeddingTowerSpec, Tower

    scenes = [world.random_scene(world.scene_rng(0, "random", i)) for i in range(4)]
    tower = Tower(EmbeddingTowerSpec("clip", str(TOWERS / "clip")))
    mined = tower.embed(torch.stack([tower.preprocess(s.render()) for s in scenes]))
    with torch.no_grad():
        model = CLIPModel.from_pretrained(TOWERS / "clip").eval()
        out = model.get_image_features(pixel_values=normalise(np.stack([s.pixels() for s in scenes])))
    direct = out if isinstance(out, torch.Tensor) else out.pooler_output
    assert mined.shape == (4, 64)
    assert torch.allclose(mined, torch.nn.functional.normalize(direct, dim=-1), atol=1e-5)


def test_the_scorer_tokenizes_as_training_did_and_drops_other_words(tmp_path):
    from transformers import AutoProcessor

    from mof_llava.lab.towers import encode_captions, vocabulary

    mining.write_scorer(TOWERS / "clip", tmp_path)
    processor = AutoProcessor.from_pretrained(tmp_path)
    trained = encode_captions(["a photo of a red circle"], vocabulary())[0]
    ids = processor(text=["a photo of a red circle"], return_tensors="pt")["input_ids"][0]
    assert ids.tolist() == trained[trained > 0].tolist()
    left = processor(text=["a photo of a red circle, on the left!"])["input_ids"][0]
    assert left == ids.tolist()


def test_lab_mine_runs_end_to_end_with_the_committed_towers(tmp_path, capsys):
    from mof_llava.cli import main as cli
    from mof_llava.cli import run
    from mof_llava.mining.store import EmbeddingStore

    out = tmp_path / "out"
    argv = ["lab", "mine", str(TOWERS), "--out", str(out), "--pool", "40", "--vlm-pairs", "2"]
    assert cli(argv) == 0
    report = json.loads(capsys.readouterr().out)
    store = EmbeddingStore(out / "emb")
    a, b = np.triu_indices(40, 1)
    cos = {}
    for name in ("clip", "dinov2"):  # the stored float16 rows, renormalised
        rows = store.tower(name).take(np.arange(40)).astype(np.float64)
        unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
        cos[name] = np.einsum("ij,ij->i", unit[a], unit[b])
    clip_min, dino_max = np.quantile(cos["clip"], 0.99), np.quantile(cos["dinov2"], 0.5)
    assert report["thresholds"]["clip_min"] == pytest.approx(clip_min, abs=1e-6)
    assert report["thresholds"]["dino_max"] == pytest.approx(dino_max, abs=1e-6)
    expected = int(((cos["clip"] >= clip_min) & (cos["dinov2"] <= dino_max)).sum())
    assert report["kept"] == report["shares"]["mined"]["pairs"] == expected > 0
    with open(out / "mmvp-mined" / "sources.csv") as f:
        assert len(list(csv.DictReader(f))) == 2 * min(expected, 30)
    vlm = report["mmvp_vlm"]
    assert vlm["pairs"] == 18 and list(vlm["per_pattern"]) == list(world.ATTRIBUTES)
    assert vlm["per_pattern"]["colour"] == 100.0  # the toy CLIP reads colour (probes 82-87 %)
    # its text tower has no word for the others: both statements of a pair read alike
    assert all(vlm["per_pattern"][a] == 0.0 for a in mining.UNCAPTIONED)
    with pytest.raises(SystemExit):
        run(["lab", "mine", str(TOWERS), "--out", str(out), "--pool", "41"])
    err = capsys.readouterr().err.strip().splitlines()
    pool = out / "pool" / "pool.json"
    assert err == [f"mof-llava: error: {pool}: a pool of 40 scenes of seed 0, not 41 of seed 0; choose a new --out"]
