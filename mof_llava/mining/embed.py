"""`mine embed`: embed an image collection with every tower, in shards, resumable, on many processes.

The image list (a folder searched recursively, or a text file of paths) is cut into shards of
`shard_size` images in list order; shard k belongs to rank k mod WORLD_SIZE (torchrun sets RANK and
WORLD_SIZE; one process embeds everything). Shards do not depend on the number of processes, so a
run can be resumed with another one.

A shard is written to a temporary folder and renamed into place when complete, so a finished shard
is never half-written and an interrupted one is simply redone. The rank that finds every shard
finished writes the manifest and the merged id and error lists (see store.py for the layout); no
process group is needed, so a rank that finishes early just exits.

Images that cannot be read are skipped: counted, and listed with the reason in corrupt.tsv.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from mof_llava.atomic import write_json_atomic, write_text_atomic
from mof_llava.mining.errors import MiningError
from mof_llava.mining.store import CORRUPT, IDS, MANIFEST, SHARDS
from mof_llava.mining.towers import EmbeddingTowerSpec
from mof_llava.options import option
from mof_llava.threads import apply_cpu_threads, cap_workers

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
RUN = "run.json"
EMBED = frozenset({"embed"})  # the `mine` step whose flags the options are


@dataclass(frozen=True)
class EmbedConfig:
    """The towers and how `mine embed` runs them; the other fields are also its flags."""

    towers: list[EmbeddingTowerSpec] = field(default_factory=list)
    batch_size: int = option(64, "images per forward pass (default %(default)s)", actions=EMBED)
    shard_size: int = option(
        10_000, "images per shard, the unit of resumption (default %(default)s)", actions=EMBED
    )
    workers: int = option(
        4, "image decoding processes per rank (default %(default)s; 0 = in-process)", actions=EMBED
    )
    device: str = option(
        "auto",
        "auto (CUDA when available, else cpu), cpu, cuda (cuda:LOCAL_RANK under torchrun), "
        "cuda:N (that GPU on every rank), ... (default %(default)s)",
        actions=EMBED,
    )
    dtype: str = option(
        "auto",
        "model dtype (auto: float16 on CUDA, float32 on CPU); embeddings are stored as float16",
        choices=("auto", "float32", "float16", "bfloat16"),
        actions=EMBED,
    )
    threads: int | None = option(  # None: mof_llava/threads.py decides
        None, "torch threads per rank on CPU (default: this rank's share of the idle cores)", actions=EMBED
    )

    def __post_init__(self):
        for name, low in (("batch_size", 1), ("shard_size", 1), ("workers", 0)):
            if getattr(self, name) < low:
                raise MiningError(f"{name} must be >= {low}, got {getattr(self, name)}")


@dataclass
class EmbedResult:
    output: Path
    images: int
    rows: int
    corrupt: int
    shards_done_here: int

    def describe(self) -> str:
        return (
            f"{self.rows} of {self.images} images embedded into {self.output} "
            f"({self.corrupt} unreadable, listed in {self.output / CORRUPT})"
        )


def list_images(source: str | Path) -> tuple[Path, list[str]]:
    """(image root, ids): a folder's image files (recursive, sorted, ids relative to it), or the
    lines of a text file (ids as written; relative ones resolve against the file's folder)."""
    source = Path(source)
    if source.is_dir():
        root = source.resolve()
        ids = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    elif source.is_file():
        root = source.resolve().parent
        ids = source.read_text(encoding="utf-8").splitlines()
        for line, value in enumerate(ids, start=1):
            if not value.strip():
                raise MiningError(f"{source}:{line}: empty line in the image list")
    else:
        raise FileNotFoundError(f"{source}: no such folder or image list")
    for value in ids:
        if "\t" in value or "\n" in value or "\r" in value:
            raise MiningError(
                f"{source}: image id {value!r} contains a tab or line break, which ids.txt cannot hold"
            )
    if not ids:
        raise MiningError(f"{source}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return root, ids


class _ImageDataset:
    """Item i: (index, {tower: pixels}) or (index, error text) for an unreadable image."""

    def __init__(self, root: Path, ids: list[str], indices: list[int], towers):
        self.root, self.ids, self.indices = root, ids, indices
        self.preprocess = {t.spec.name: t.preprocess for t in towers}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int):
        from mof_llava.data.images import ImageLoadError, load_rgb_image

        index = self.indices[item]
        path = self.root / self.ids[index]
        try:
            image = load_rgb_image(path, loading="viewer")
            return index, {name: fn(image) for name, fn in self.preprocess.items()}
        except ImageLoadError as err:
            return index, err.reason
        except (OSError, ValueError) as err:  # a processor that cannot handle the image (e.g. 1x1)
            return index, f"cannot preprocess ({err})"


def _collate(items):
    import torch

    good = [(i, px) for i, px in items if isinstance(px, dict)]
    bad = [(i, reason) for i, reason in items if not isinstance(reason, dict)]
    pixels = {}
    if good:
        for name in good[0][1]:
            pixels[name] = torch.stack([px[name] for _, px in good])
    return [i for i, _ in good], pixels, bad


def _ids_digest(ids: list[str]) -> str:
    h = hashlib.sha256()
    for value in ids:
        h.update(value.encode("utf-8") + b"\n")
    return h.hexdigest()


def _check_run(output: Path, run: dict) -> None:
    """Record what the run embeds; a resumed run must embed the same images with the same towers."""
    path = output / RUN
    if not path.exists():
        write_json_atomic(path, run, indent=2)
        return
    previous = json.loads(path.read_text(encoding="utf-8"))
    for key in ("ids_sha256", "images", "image_root", "towers", "shard_size", "dtype"):
        if previous.get(key) != run.get(key):
            raise MiningError(
                f"{output}: an earlier run there used a different {key} "
                f"({previous.get(key)!r} vs now {run.get(key)!r}); use a new output folder to start over"
            )


def _shard_name(k: int) -> str:
    return f"{k:06d}"


def _rank_and_world() -> tuple[int, int, int]:
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", rank))
    return rank, world, local


def _resolve_device(device: str, local_rank: int) -> str:
    """auto: CUDA when available, else cpu. A bare `cuda` is this process's GPU, cuda:LOCAL_RANK
    (under torchrun every rank would otherwise share cuda:0); `cuda:N` and others are kept."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return device


def embed_collection(images: str | Path, output: str | Path, cfg: EmbedConfig) -> EmbedResult | None:
    """Embed this rank's unfinished shards; the rank that completes the set merges it.
    Returns the merged result, or None when other ranks' shards are still unfinished."""
    if not cfg.towers:
        raise MiningError("no towers configured")
    if len({t.name for t in cfg.towers}) != len(cfg.towers):
        raise MiningError("tower names must be unique")
    output = Path(output)
    root, ids = list_images(images)
    rank, world, local_rank = _rank_and_world()
    device = _resolve_device(cfg.device, local_rank)
    dtype = _resolve_dtype(cfg.dtype, device)
    if device.startswith("cpu"):
        apply_cpu_threads(cfg.threads, "--threads")
    cfg = replace(cfg, workers=cap_workers(cfg.workers, "--workers"))
    (output / SHARDS).mkdir(parents=True, exist_ok=True)
    run = {
        "images": len(ids),
        "ids_sha256": _ids_digest(ids),
        "image_root": str(root),
        "source": str(Path(images).resolve()),
        "towers": [asdict(t) for t in cfg.towers],
        "shard_size": cfg.shard_size,
        "dtype": dtype,  # the towers' compute precision: shards of one run must agree
    }
    _check_run(output, run)

    shards = range((len(ids) + cfg.shard_size - 1) // cfg.shard_size)
    mine = [k for k in shards if k % world == rank and not _shard_done(output, k)]
    for k in mine:  # leftovers of interrupted attempts at this rank's shards
        for stale in (output / SHARDS).glob(f".{_shard_name(k)}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    if mine:
        towers = _load_towers(cfg, device, dtype)
        for k in mine:
            _embed_shard(output, root, ids, k, cfg, towers, rank)
    if all(_shard_done(output, k) for k in shards):
        return _merge(output, ids, root, cfg, len(shards), len(mine))
    return None


def _shard_done(output: Path, k: int) -> bool:
    return (output / SHARDS / _shard_name(k) / "done.json").exists()


def _resolve_dtype(dtype: str, device: str) -> str:
    if dtype == "auto":
        return "float16" if device.startswith("cuda") else "float32"
    return dtype


def _load_towers(cfg: EmbedConfig, device: str, dtype: str):
    from mof_llava.mining.towers import Tower

    return [Tower(spec, device=device, dtype=dtype) for spec in cfg.towers]


def _embed_shard(
    output: Path, root: Path, ids: list[str], k: int, cfg: EmbedConfig, towers, rank: int
) -> None:
    import torch
    from tqdm import tqdm

    indices = list(range(k * cfg.shard_size, min(len(ids), (k + 1) * cfg.shard_size)))
    loader = torch.utils.data.DataLoader(
        _ImageDataset(root, ids, indices, towers),
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        collate_fn=_collate,
    )
    rows: list[int] = []
    vectors: dict[str, list[np.ndarray]] = {t.spec.name: [] for t in towers}
    corrupt: list[tuple[int, str]] = []
    bar = tqdm(total=len(indices), desc=f"rank {rank} shard {k}", unit=" img", disable=None, leave=False)
    for batch_rows, pixels, bad in loader:
        corrupt.extend(bad)
        if batch_rows:
            for tower in towers:
                vectors[tower.spec.name].append(
                    tower.embed(pixels[tower.spec.name]).numpy().astype(np.float16)
                )
            rows.extend(batch_rows)
        bar.update(len(batch_rows) + len(bad))
    bar.close()

    final = output / SHARDS / _shard_name(k)
    tmp = output / SHARDS / f".{_shard_name(k)}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for tower in towers:
        parts = vectors[tower.spec.name]
        matrix = np.concatenate(parts) if parts else np.empty((0, tower.dim), np.float16)
        np.save(tmp / f"{tower.spec.name}.npy", matrix)
    (tmp / IDS).write_text("".join(ids[i] + "\n" for i in rows), encoding="utf-8")
    (tmp / CORRUPT).write_text(
        "".join(f"{ids[i]}\t{reason}\n" for i, reason in sorted(corrupt)), encoding="utf-8"
    )
    towers_info = [
        {"name": t.spec.name, "dim": t.dim, "model": t.spec.model, "pooling": t.pooling} for t in towers
    ]
    (tmp / "done.json").write_text(
        json.dumps({"rows": len(rows), "corrupt": len(corrupt), "towers": towers_info})
    )
    shutil.rmtree(final, ignore_errors=True)  # a partial copy from a crash between the two renames
    os.replace(tmp, final)


def _merge(
    output: Path, ids: list[str], root: Path, cfg: EmbedConfig, n_shards: int, done_here: int
) -> EmbedResult:
    shards, all_ids, all_corrupt = [], [], []
    towers_info = None
    for k in range(n_shards):
        folder = output / SHARDS / _shard_name(k)
        done = json.loads((folder / "done.json").read_text())
        towers_info = towers_info or done["towers"]
        shards.append({"name": _shard_name(k), "rows": done["rows"], "corrupt": done["corrupt"]})
        all_ids.append((folder / IDS).read_text(encoding="utf-8"))
        all_corrupt.append((folder / CORRUPT).read_text(encoding="utf-8"))
    rows = sum(s["rows"] for s in shards)
    corrupt = sum(s["corrupt"] for s in shards)
    write_text_atomic(output / IDS, "".join(all_ids))
    write_text_atomic(output / CORRUPT, "".join(all_corrupt))
    manifest = {
        "format": "mof-llava-embeddings/1",
        "image_root": str(root),
        "images": len(ids),
        "rows": rows,
        "corrupt": corrupt,
        "normalised": True,
        "dtype": "float16",
        "towers": towers_info,
        "shards": shards,
    }
    write_json_atomic(output / MANIFEST, manifest, indent=2)  # last: its presence marks the set complete
    return EmbedResult(output, len(ids), rows, corrupt, done_here)
