"""CLIP-blind pairs from two towers: planted pairs found, decoys and duplicates left out (and
counted), the CSV's format and order, and `mine pairs` on plain .npy input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mining_helpers import ArrayRows

from mof_llava.cli import main as cli
from mof_llava.mining.kernel import BadEmbeddingError
from mof_llava.mining.pairs import PairCriteria, find_blind_pairs, read_pairs_csv, write_pairs_csv
from mof_llava.mining.search import SearchConfig
from mof_llava.mining.store import NpyRows, ShardedRows
from mof_llava.mining.synthetic import LayoutSpec, SyntheticSpec, make_collection


def unit64(x):
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def expected_pairs(clip, dino, criteria: PairCriteria):
    """Brute force over the full matrices: every pair passing both tests and not a duplicate."""
    c, d = unit64(clip), unit64(dino)
    cs, ds = c @ c.T, d @ d.T
    near_one = 1 - criteria.duplicate_tol
    ok = (cs >= criteria.clip_min) & (ds <= criteria.dino_max) & ~((cs >= near_one) & (ds >= near_one))
    a, b = np.nonzero(np.triu(ok, k=1))
    return {(int(i), int(j)): (cs[i, j], ds[i, j]) for i, j in zip(a, b)}


@pytest.fixture(scope="module")
def collection():
    layout = LayoutSpec(concepts=30)
    spec = SyntheticSpec(
        rows=3000,
        clip_dim=64,
        dino_dim=48,
        blind_pairs=120,
        clip_near_misses=40,
        dino_close_pairs=40,
        duplicates=15,
        clip_layout=layout,
        dino_layout=layout,
        seed=7,
    )
    return make_collection(spec)


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_planted_pairs_found_and_no_threshold_broken(collection, method):
    ids = [f"img{i}.jpg" for i in range(len(collection.clip))]
    criteria = PairCriteria()
    # ivf: exact settings
    cfg = SearchConfig(method=method, lists=32, probe_slack=1.0, max_probes=0, recall_sample=500)
    table, stats = find_blind_pairs(
        ArrayRows(collection.clip),
        ArrayRows(collection.dino),
        ids,
        criteria,
        cfg,
        show_progress=False,
    )
    found = set(zip(table.a.tolist(), table.b.tolist()))
    expected = expected_pairs(collection.clip, collection.dino, criteria)
    assert found == set(expected)
    p = collection.planted
    assert {tuple(x) for x in p.blind.tolist()} <= found
    for decoys in (p.clip_near_misses, p.dino_close, p.duplicates):
        assert not ({tuple(x) for x in decoys.tolist()} & found)
    for a, b, clip, dino in zip(table.a, table.b, table.clip, table.dino):
        assert a < b and clip >= 0.95 and dino <= 0.6
        assert (clip, dino) == pytest.approx(expected[(a, b)], abs=1e-6)
    assert stats.duplicate_pairs == len(p.duplicates)
    assert stats.dino_rejected >= len(p.dino_close)
    assert stats.clip_pairs == stats.kept + stats.dino_rejected + stats.duplicate_pairs + stats.same_id_pairs
    if method == "ivf":  # slack 1 is exact, so the sampled recall must be 1
        assert stats.recall_clip.true_pairs > 0 and stats.recall_clip.recall == 1.0
        assert stats.recall_blind.recall == 1.0


def test_recall_sample_default_is_the_search_configs_for_library_and_command(collection):
    # One default: the library measures recall unless told not to, and the command's flag reads it.
    from mof_llava.cli import build_parser

    default = SearchConfig().recall_sample
    assert default > 0
    ids = [f"img{i}.jpg" for i in range(len(collection.clip))]
    cfg = SearchConfig(method="ivf", lists=32, probe_slack=1.0, max_probes=0)
    _, stats = find_blind_pairs(
        ArrayRows(collection.clip), ArrayRows(collection.dino), ids, cfg=cfg, show_progress=False
    )
    assert stats.recall_clip.sample_rows == min(default, len(ids))
    args = build_parser().parse_args(["mine", "pairs", "emb", "-o", "p.csv"])
    assert args.recall_sample == default
    with pytest.raises(ValueError, match="recall_sample must be >= 0"):
        SearchConfig(recall_sample=-1)


def test_sorted_by_gap_then_rows(collection):
    ids = [f"img{i}.jpg" for i in range(len(collection.clip))]
    table, _ = find_blind_pairs(
        ArrayRows(collection.clip), ArrayRows(collection.dino), ids, show_progress=False
    )
    gap = table.clip - table.dino
    assert np.all(np.diff(gap) <= 0)
    assert len(table) >= len(collection.planted.blind)


def test_same_image_id_at_two_rows_is_left_out_and_counted():
    rng = np.random.default_rng(1)
    clip = rng.standard_normal((6, 16)).astype(np.float32)
    dino = rng.standard_normal((6, 16)).astype(np.float32)
    clip[4] = clip[1] + 0.01 * rng.standard_normal(16)  # CLIP-close, DINOv2 far: a blind pair ...
    ids = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "b.jpg", "f.jpg"]  # ... but rows 1 and 4 are one image
    table, stats = find_blind_pairs(ArrayRows(clip), ArrayRows(dino), ids, show_progress=False)
    assert len(table) == 0
    assert stats.same_id_pairs == 1 and stats.clip_pairs == 1
    ids[4] = "e.jpg"
    table, stats = find_blind_pairs(ArrayRows(clip), ArrayRows(dino), ids, show_progress=False)
    assert (table.a.tolist(), table.b.tolist()) == ([1], [4]) and stats.same_id_pairs == 0


def test_mismatched_inputs_are_refused():
    x = np.ones((5, 4), np.float32)
    with pytest.raises(ValueError, match="row counts differ: CLIP 5, DINOv2 4, ids 5"):
        find_blind_pairs(ArrayRows(x), ArrayRows(x[:4]), list("abcde"))
    with pytest.raises(ValueError, match="clip_min must be a cosine"):
        PairCriteria(clip_min=1.5)


def test_csv_round_trip_keeps_awkward_ids(tmp_path):
    from mof_llava.mining.pairs import PairTable

    ids = ["plain.jpg", "with,comma.jpg", 'quote".jpg', "NA", "dir/é.png"]
    table = PairTable(
        np.array([0, 1, 3]), np.array([2, 4, 4]), np.array([0.99, 0.97, 0.96]), np.array([0.1, 0.2, 0.5])
    )
    path = tmp_path / "pairs.csv"
    write_pairs_csv(path, table, ids)
    assert path.read_text().splitlines()[0] == "image_a,image_b,clip_cos,dino_cos"
    frame = read_pairs_csv(path)
    assert frame["image_a"].tolist() == ["plain.jpg", "with,comma.jpg", "NA"]
    assert frame["image_b"].tolist() == ['quote".jpg', "dir/é.png", "dir/é.png"]
    assert frame["clip_cos"].tolist() == [0.99, 0.97, 0.96]


def test_bad_csv_is_named_with_its_line(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("image_a,image_b,clip_cos,dino_cos\na.jpg,b.jpg,0.97,0.1\nc.jpg,d.jpg,high,0.2\n")
    with pytest.raises(ValueError, match=r"pairs.csv:3: clip_cos is not a number \('high'\)"):
        read_pairs_csv(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing column"):
        read_pairs_csv(path)


def save_npy_inputs(tmp_path, collection, dtype=np.float16):
    np.save(tmp_path / "clip.npy", collection.clip.astype(dtype))
    np.save(tmp_path / "dino.npy", collection.dino.astype(dtype))
    (tmp_path / "ids.txt").write_text("".join(f"img{i:05d}.jpg\n" for i in range(len(collection.clip))))


def npy_pairs_args(tmp_path):
    """`mine pairs` on the files save_npy_inputs wrote."""
    return ["mine", "pairs", "--clip-npy", str(tmp_path / "clip.npy"), "--dino-npy", str(tmp_path / "dino.npy"),
            "--ids", str(tmp_path / "ids.txt")]  # fmt: skip


def test_pairs_command_on_npy_input(tmp_path, collection, capsys):
    save_npy_inputs(tmp_path, collection)
    out = tmp_path / "out" / "pairs.csv"
    options = ["--method", "ivf", "--probe-slack", "1", "--max-probes", "0", "--recall-sample", "300"]
    code = cli([*npy_pairs_args(tmp_path), "-o", str(out), *options])
    assert code == 0
    frame = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["image_a", "image_b", "clip_cos", "dino_cos"]
    # Truth from the float16 values the command read.
    expected = expected_pairs(
        collection.clip.astype(np.float16), collection.dino.astype(np.float16), PairCriteria()
    )
    got = {(int(a[3:8]), int(b[3:8])) for a, b in zip(frame.image_a, frame.image_b)}
    assert got == set(expected)
    summary = json.loads((tmp_path / "out" / "pairs.summary.json").read_text())
    assert summary["image_root"] == str(tmp_path)
    assert summary["stats"]["kept"] == len(expected)
    assert summary["stats"]["duplicate_pairs"] == len(collection.planted.duplicates)
    assert summary["stats"]["recall_clip"]["recall"] == 1.0
    assert summary["peak_rss_bytes"] > 0
    search = summary["search"]
    assert search["method"] == summary["stats"]["search"]["method"] == "ivf"
    assert search["lists"] == summary["stats"]["search"]["lists"] > 0
    assert search["requested"] == {"method": "ivf", "lists": 0}
    assert (search["probe_slack"], search["max_probes"], search["recall_sample"]) == (1.0, 0, 300)
    printed = capsys.readouterr().out
    assert f"{len(expected)} CLIP-blind pairs written" in printed and "recall vs exact search" in printed


def test_pairs_command_names_a_zero_embedding(tmp_path, collection):
    save_npy_inputs(tmp_path, collection, dtype=np.float32)
    dino = np.load(tmp_path / "dino.npy")
    dino[123] = 0
    np.save(tmp_path / "dino.npy", dino)
    with pytest.raises(SystemExit, match=r"dino.npy: row 123 \(image img00123.jpg\): embedding is all zeros"):
        cli([*npy_pairs_args(tmp_path), "-o", str(tmp_path / "p.csv")])


def test_pairs_command_needs_one_kind_of_input(tmp_path):
    with pytest.raises(SystemExit, match="give an embed folder, or all three"):
        cli(["mine", "pairs", "--clip-npy", "x.npy", "-o", str(tmp_path / "p.csv")])


def test_npy_rows_read_in_blocks_and_by_index(tmp_path):
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    np.save(tmp_path / "a.npy", x[:7])
    np.save(tmp_path / "b.npy", x[7:])
    rows = ShardedRows([NpyRows(tmp_path / "a.npy"), NpyRows(tmp_path / "b.npy")])
    assert (rows.rows, rows.dim) == (20, 3)
    assert np.array_equal(rows.read(5, 12), x[5:12])
    assert np.array_equal(rows.read(15, 99), x[15:])
    picked = np.array([19, 0, 7, 6, 8])
    assert np.array_equal(rows.take(picked), x[picked])


def test_npy_rows_refuse_wrong_files(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="expected a 2-D array"):
        NpyRows(tmp_path / "v.npy")
    np.save(tmp_path / "i.npy", np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="expected float16/32/64"):
        NpyRows(tmp_path / "i.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((3, 2), np.float32)))
    with pytest.raises(ValueError, match="Fortran-ordered"):
        NpyRows(tmp_path / "f.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy: embedding file not found"):
        NpyRows(tmp_path / "missing.npy")
    np.save(tmp_path / "d3.npy", np.zeros((2, 3), np.float32))
    np.save(tmp_path / "d4.npy", np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"disagree on the dimension: .*d3.npy \(3\), .*d4.npy \(4\)"):
        ShardedRows([NpyRows(tmp_path / "d3.npy"), NpyRows(tmp_path / "d4.npy")])


def test_bad_rows_raise_with_row(collection):
    x = collection.clip.copy()
    x[42] = np.inf
    with pytest.raises(BadEmbeddingError) as err:
        find_blind_pairs(
            ArrayRows(x), ArrayRows(collection.dino), [str(i) for i in range(len(x))], show_progress=False
        )
    assert err.value.row == 42 and err.value.tower == "clip"


def test_pairs_summary_records_a_relative_image_root_as_absolute(tmp_path, monkeypatch):
    # `sheet` and `export-mmvp` may run from another folder: the recorded root must not depend on
    # the folder `pairs` ran in.
    x = np.eye(3, dtype=np.float32)
    np.save(tmp_path / "clip.npy", x)
    np.save(tmp_path / "dino.npy", x)
    (tmp_path / "ids.txt").write_text("a.jpg\nb.jpg\nc.jpg\n")
    monkeypatch.chdir(tmp_path)
    args = ["mine", "pairs", "--clip-npy", "clip.npy", "--dino-npy", "dino.npy", "--ids", "ids.txt"]
    assert cli([*args, "-o", "p.csv", "--image-root", "photos"]) == 0
    assert json.loads((tmp_path / "p.summary.json").read_text())["image_root"] == str(tmp_path / "photos")
    assert cli([*args, "-o", "q.csv"]) == 0
    assert json.loads((tmp_path / "q.summary.json").read_text())["image_root"] == str(tmp_path)


def test_pairs_summary_search_block_holds_the_method_searched_and_the_one_requested(tmp_path):
    x = np.eye(3, dtype=np.float32)
    np.save(tmp_path / "clip.npy", x)
    np.save(tmp_path / "dino.npy", x)
    (tmp_path / "ids.txt").write_text("a.jpg\nb.jpg\nc.jpg\n")
    args = ["mine", "pairs", "--clip-npy", str(tmp_path / "clip.npy"), "--dino-npy"]
    args += [str(tmp_path / "dino.npy"), "--ids", str(tmp_path / "ids.txt"), "-o", str(tmp_path / "p.csv")]
    assert cli(args) == 0  # --method auto, 3 rows: exact
    search = json.loads((tmp_path / "p.summary.json").read_text())["search"]
    assert (search["method"], search["lists"]) == ("exact", 0)
    assert search["requested"] == {"method": "auto", "lists": 0}
