"""The four mining verbs called from Python, without argv: mining.api.embed / pairs / sheet / export."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from mining_helpers import write_image_folder
from PIL import Image

from mof_llava.mining import api as mine
from mof_llava.mining.embed import EmbedConfig
from mof_llava.mining.pairs import PairCriteria
from mof_llava.mining.search import SearchConfig
from mof_llava.mining.store import EmbeddingStore
from mof_llava.mining.towers import EmbeddingTowerSpec


def planted_inputs(tmp_path):
    """Six images, and CLIP / DINOv2 rows built so that exactly images 0-1 and 2-3 are CLIP-blind
    (CLIP cosine 1 - 1e-2, DINOv2 orthogonal); 4 and 5 are far from everything on CLIP."""
    ids = write_image_folder(tmp_path / "images", 6)
    clip = np.eye(6, 8, dtype=np.float32)
    clip[1] = clip[0] + 0.1425 * np.eye(1, 8, 6, dtype=np.float32)  # cos(0, 1) ~= 0.99
    clip[3] = clip[2] + 0.1425 * np.eye(1, 8, 7, dtype=np.float32)
    dino = np.eye(6, 6, dtype=np.float32)
    np.save(tmp_path / "clip.npy", clip)
    np.save(tmp_path / "dino.npy", dino)
    (tmp_path / "ids.txt").write_text("".join(f"{i}\n" for i in ids))
    return ids


def test_pairs_sheet_and_export_from_python(tmp_path):
    ids = planted_inputs(tmp_path)
    job = mine.PairsJob(
        tmp_path / "pairs.csv",
        clip_npy=tmp_path / "clip.npy",
        dino_npy=tmp_path / "dino.npy",
        ids=tmp_path / "ids.txt",
        image_root=tmp_path / "images",
        criteria=PairCriteria(clip_min=0.95, dino_max=0.6),
        search=SearchConfig(method="exact"),
    )
    result = mine.pairs(job)
    with open(tmp_path / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["image_a"], r["image_b"]) for r in rows} == {(ids[0], ids[1]), (ids[2], ids[3])}
    assert result.stats.kept == 2 and result.describe().startswith("2 CLIP-blind pairs written to ")
    summary = json.loads((tmp_path / "pairs.summary.json").read_text())
    assert summary["image_root"] == str((tmp_path / "images").resolve())
    assert summary["criteria"] == {"clip_min": 0.95, "dino_max": 0.6, "duplicate_tol": 1e-3}
    assert summary["search"]["method"] == "exact" and summary == result.summary

    sheet = mine.sheet(mine.SheetJob(tmp_path / "pairs.csv", tmp_path / "sheet.png", thumb=32, columns=1))
    assert sheet.pairs == 2 and not sheet.unreadable
    assert Image.open(tmp_path / "sheet.png").size[0] == 2 * 32 + 24  # image root read from the summary

    exported = mine.export(mine.ExportJob(tmp_path / "pairs.csv", tmp_path / "bench", top=5))
    assert (exported.pairs, exported.requested) == (2, 5)
    assert sorted(p.name for p in (tmp_path / "bench" / "MMVP Images").iterdir()) == [
        "1.jpg",
        "2.jpg",
        "3.jpg",
        "4.jpg",
    ]


def test_pairs_input_errors_are_pairs_input_errors(tmp_path):
    ids = planted_inputs(tmp_path)
    with pytest.raises(mine.PairsInputError, match="not both"):
        mine.pairs(mine.PairsJob(tmp_path / "p.csv", embeddings=tmp_path, clip_npy=tmp_path / "clip.npy"))
    with pytest.raises(mine.PairsInputError, match="all three"):
        mine.pairs(mine.PairsJob(tmp_path / "p.csv", clip_npy=tmp_path / "clip.npy"))
    dino = np.load(tmp_path / "dino.npy")
    dino[4] = 0
    np.save(tmp_path / "dino.npy", dino)
    job = mine.PairsJob(
        tmp_path / "p.csv", None, tmp_path / "clip.npy", tmp_path / "dino.npy", tmp_path / "ids.txt"
    )
    message = rf"dino.npy: row 4 \(image {re.escape(ids[4])}\): embedding is all zeros"
    with pytest.raises(mine.PairsInputError, match=message):
        mine.pairs(job)
    assert not (tmp_path / "p.csv").exists()


def test_embed_from_python(tmp_path, tiny_towers):
    ids = write_image_folder(tmp_path / "images", 3)
    towers = [
        EmbeddingTowerSpec("clip", str(tiny_towers.clip)),
        EmbeddingTowerSpec("dinov2", str(tiny_towers.dinov2)),
    ]
    config = EmbedConfig(towers=towers, batch_size=2, shard_size=2, workers=0)
    result = mine.embed(mine.EmbedJob(tmp_path / "images", tmp_path / "emb", config))
    assert (result.images, result.rows, result.corrupt) == (3, 3, 0)
    store = EmbeddingStore(tmp_path / "emb")
    assert store.ids() == ids and store.tower("dinov2").rows == 3
    json.loads((tmp_path / "emb" / "manifest.json").read_text())  # written whole by the atomic writer
