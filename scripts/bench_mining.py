"""Benchmark `mof-llava mine pairs`: time, peak memory and recall at 100k-1M images.

For each collection size, CLIP dimension and layout, the script draws a synthetic collection with
planted pairs (mof_llava/mining/synthetic.py), saves it as float16 `.npy` files the way `mine embed`
stores embeddings, and runs the real command in a fresh process (its summary JSON records wall time
per stage and the process's peak RSS). Recall is measured three ways:

- planted: the share of planted CLIP-blind pairs in the CSV (every one satisfies both thresholds);
- exact: the share of the pairs an exact search writes (`--method exact`, where feasible);
- sampled: the command's own estimate against exact search on a random sample of rows.

    .venv/bin/python scripts/bench_mining.py --rows 100000 300000 1000000 --clip-dims 768 1024 \
        --layouts clustered isotropic --exact-up-to 300000 --json mining-results.jsonl

Generated collections are cached under --cache (about 4 GB per million 1024-d rows).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mof_llava.mining.synthetic import LayoutSpec, SyntheticSpec, make_collection  # noqa: E402


def collection_dir(cache: Path, rows: int, clip_dim: int, layout: str, seed: int) -> Path:
    return cache / f"{layout}-{rows}-clip{clip_dim}-dino1024-seed{seed}"


def ensure_collection(cache: Path, rows: int, clip_dim: int, layout: str, seed: int, blind: int) -> Path:
    folder = collection_dir(cache, rows, clip_dim, layout, seed)
    if (folder / "planted.npz").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = SyntheticSpec(
        rows=rows,
        clip_dim=clip_dim,
        dino_dim=1024,
        blind_pairs=blind,
        clip_near_misses=blind // 4,
        dino_close_pairs=blind // 4,
        duplicates=blind // 10,
        clip_layout=LayoutSpec(kind=layout),
        dino_layout=LayoutSpec(kind=layout, mean_weight=0.3, concept_weight=0.9),
        seed=seed,
    )
    collection = make_collection(spec)
    np.save(folder / "clip.npy", collection.clip.astype(np.float16))
    np.save(folder / "dino.npy", collection.dino.astype(np.float16))
    (folder / "ids.txt").write_text("".join(f"img{i:08d}.jpg\n" for i in range(rows)))
    p = collection.planted
    np.savez(
        folder / "planted.npz", blind=p.blind, near=p.clip_near_misses, close=p.dino_close, dup=p.duplicates
    )
    print(f"  generated {folder.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return folder


def run_pairs(folder: Path, out_csv: Path, extra: list[str], threads: int | None) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "mof_llava.cli",
        "mine",
        "pairs",
        "--clip-npy",
        str(folder / "clip.npy"),
        "--dino-npy",
        str(folder / "dino.npy"),
        "--ids",
        str(folder / "ids.txt"),
        "-o",
        str(out_csv),
        *extra,
    ]
    env = dict(os.environ)
    if threads:
        env.update(
            OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads)
        )
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    summary = json.loads(out_csv.with_name(out_csv.stem + ".summary.json").read_text())
    summary["wall_seconds"] = wall  # includes interpreter start and imports
    summary["stdout"] = done.stdout
    return summary


def pair_keys(csv_path: Path) -> set[tuple[str, str]]:
    import pandas as pd

    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    return set(zip(frame["image_a"], frame["image_b"]))


def planted_keys(folder: Path) -> set[tuple[str, str]]:
    blind = np.load(folder / "planted.npz")["blind"]
    return {(f"img{a:08d}.jpg", f"img{b:08d}.jpg") for a, b in blind}


def faiss_ivf_baseline(folder: Path, nprobe: int, threshold: float = 0.95) -> dict:
    """faiss' own route for comparison: IndexIVFFlat (inner product) + range_search of every row
    against the index, CLIP side only. Returns time and the (a < b) pairs it finds."""
    import faiss

    x = np.load(folder / "clip.npy").astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    n, d = x.shape
    lists = 2 ** round(np.log2(2 * np.sqrt(n)))
    t0 = time.perf_counter()
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, lists, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(x[rng.choice(n, min(n, 40 * lists), replace=False)])
    index.add(x)
    index.nprobe = nprobe
    t_build = time.perf_counter() - t0
    found = set()
    radius = float(np.nextafter(np.float32(threshold), np.float32(-1)))  # faiss keeps scores > radius
    for start in range(0, n, 20000):
        lims, _, labels = index.range_search(x[start : start + 20000], radius)
        for q in range(len(lims) - 1):
            a = start + q
            for b in labels[lims[q] : lims[q + 1]]:
                if a != b:
                    found.add((min(a, int(b)), max(a, int(b))))
    return {
        "lists": lists,
        "nprobe": nprobe,
        "seconds_build": round(t_build, 1),
        "seconds_total": round(time.perf_counter() - t0, 1),
        "pairs": found,
    }


def clip_pairs_from_summary(folder: Path) -> int:
    """Pairs with CLIP cos >= threshold that the exact run found (from its summary)."""
    return json.loads((folder / "exact.summary.json").read_text())["stats"]["clip_pairs"]


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--clip-dims", type=int, nargs="+", default=[768, 1024])
    ap.add_argument("--layouts", nargs="+", default=["clustered", "isotropic"])
    ap.add_argument("--blind-pairs", type=int, default=1000, help="planted CLIP-blind pairs per collection")
    ap.add_argument("--exact-up-to", type=int, default=300_000, help="also run exact search up to this size")
    ap.add_argument(
        "--slack", type=float, nargs="+", default=[None], help="--probe-slack values (default: the command's)"
    )
    ap.add_argument("--threads", type=int, default=None, help="limit BLAS/OpenMP threads")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/mof-llava-bench-mining"))
    ap.add_argument("--json", type=Path, help="append results (one JSON object per run) to this file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--faiss-nprobe",
        type=int,
        nargs="*",
        default=[],
        help="also time faiss IndexIVFFlat.range_search with these nprobe (CLIP side only)",
    )
    ap.add_argument("--faiss-up-to", type=int, default=100_000, help="largest collection for the faiss baseline")
    args = ap.parse_args()

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        flush=True,
    )
    for layout in args.layouts:
        for clip_dim in args.clip_dims:
            for rows in args.rows:
                folder = ensure_collection(args.cache, rows, clip_dim, layout, args.seed, args.blind_pairs)
                planted = planted_keys(folder)
                exact = None
                if rows <= args.exact_up_to:
                    load_before = load_average()
                    result = run_pairs(folder, folder / "exact.csv", ["--method", "exact"], args.threads)
                    exact = pair_keys(folder / "exact.csv")
                    report(args, layout, clip_dim, rows, "exact", None, result, planted, exact, load_before)
                for nprobe in args.faiss_nprobe if rows <= args.faiss_up_to else []:
                    load_before = load_average()
                    base = faiss_ivf_baseline(folder, nprobe)
                    clip_exact = clip_pairs_from_summary(folder) if exact is not None else None
                    row = {
                        "layout": layout,
                        "rows": rows,
                        "clip_dim": clip_dim,
                        "method": "faiss-IndexIVFFlat",
                        "lists": base["lists"],
                        "nprobe": nprobe,
                        "seconds_total": base["seconds_total"],
                        "seconds_build": base["seconds_build"],
                        "clip_pairs": len(base["pairs"]),
                        "clip_pairs_exact": clip_exact,
                        "load_before": load_before,
                        "load_after": load_average(),
                    }
                    emit(args, row)
                for slack in args.slack:
                    extra = ["--method", "ivf"] + ([] if slack is None else ["--probe-slack", str(slack)])
                    load_before = load_average()
                    result = run_pairs(folder, folder / "ivf.csv", extra, args.threads)
                    report(
                        args,
                        layout,
                        clip_dim,
                        rows,
                        "ivf",
                        slack,
                        result,
                        planted,
                        exact,
                        load_before,
                        pair_keys(folder / "ivf.csv"),
                    )


def report(args, layout, clip_dim, rows, method, slack, result, planted, exact, load_before, found=None):
    stats = result["stats"]
    found = exact if found is None else found
    row = {
        "layout": layout,
        "rows": rows,
        "clip_dim": clip_dim,
        "method": method,
        "probe_slack": result["search"]["probe_slack"] if method == "ivf" else None,
        "seconds_total": round(stats["seconds"]["total"], 1),
        "seconds_wall": round(result["wall_seconds"], 1),
        "seconds": {k: round(v, 1) for k, v in {**stats["seconds"], **stats["search"]["seconds"]}.items()},
        "peak_rss_gib": round(result["peak_rss_bytes"] / 2**30, 2),
        "lists": stats["search"]["lists"],
        "probes_per_row": round(stats["search"]["probes_per_row"], 2),
        "largest_list": stats["search"]["largest_list"],
        "tera_multiply_adds": round(stats["search"]["multiply_adds"] / 1e12, 2),
        "kept": stats["kept"],
        "planted_recall": round(len(found & planted) / len(planted), 5),
        "exact_recall": round(len(found & exact) / len(exact), 5) if exact else None,
        "exact_pairs": len(exact) if exact else None,
        "sampled_recall_clip": (stats.get("recall_clip") or {}).get("recall"),
        "sampled_true_pairs": (stats.get("recall_clip") or {}).get("true_pairs"),
        "load_before": load_before,
        "load_after": load_average(),
    }
    emit(args, row)


def emit(args, row: dict) -> None:
    """One result row: printed, and appended to --json when given."""
    print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
