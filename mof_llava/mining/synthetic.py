"""Synthetic embedding collections with planted CLIP-blind pairs, for tests and benchmarks.

Real image embeddings are not isotropic: CLIP puts every image in a narrow cone (unrelated images
typically have cosine 0.3-0.6), images of the same concept crowd together, concepts are unevenly
popular, and the variance is spread over few directions. A search that is fast and accurate on
isotropic Gaussian vectors can be slow (unbalanced clusters) or miss pairs on such data, so the
"clustered" layout imitates those traits:

    row = normalise(mean_weight * m + concept_weight * c_k + noise_weight * n)

with one shared direction m, a concept centre c_k drawn with Zipf-like popularity, and noise n whose
per-dimension variance decays as a power law. "isotropic" draws unit Gaussian vectors.

Planted pairs overwrite a second row with a vector at an exact cosine from the first row, in both
towers, and come in four kinds (`PlantedPairs`): CLIP-blind pairs that a search must report, and
three decoys it must not report (CLIP just too far, DINOv2 too close, exact duplicates). Targets
stay a few thousandths away from the thresholds so that float16 storage cannot flip them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LayoutSpec:
    """Shape of one tower's synthetic distribution."""

    kind: str = "clustered"  # "clustered" or "isotropic"
    concepts: int = 2000
    mean_weight: float = 0.9
    concept_weight: float = 0.8
    noise_weight: float = 0.55
    spectrum_decay: float = 1.0  # noise variance of dimension k ~ k ** -spectrum_decay
    popularity_decay: float = 0.5  # concept k drawn with probability ~ (k + 1) ** -popularity_decay


@dataclass(frozen=True)
class SyntheticSpec:
    rows: int
    clip_dim: int = 768
    dino_dim: int = 1024
    blind_pairs: int = 200  # CLIP cos in clip_range, DINOv2 cos in dino_blind_range: must be found
    clip_near_misses: int = 50  # CLIP cos in near_miss_range: must not be reported
    dino_close_pairs: int = 50  # CLIP cos in clip_range but DINOv2 cos in dino_close_range: not reported
    duplicates: int = 20  # identical rows in both towers: left out and counted
    clip_range: tuple[float, float] = (0.955, 0.995)
    near_miss_range: tuple[float, float] = (0.90, 0.945)
    dino_blind_range: tuple[float, float] = (0.05, 0.55)
    dino_close_range: tuple[float, float] = (0.65, 0.95)
    clip_layout: LayoutSpec = field(default_factory=LayoutSpec)
    dino_layout: LayoutSpec = field(default_factory=lambda: LayoutSpec(mean_weight=0.3, concept_weight=0.9))
    seed: int = 0


@dataclass
class PlantedPairs:
    """Row pairs (a < b) planted by `make_collection`, by kind."""

    blind: np.ndarray  # (n, 2) int64
    clip_near_misses: np.ndarray
    dino_close: np.ndarray
    duplicates: np.ndarray


@dataclass
class SyntheticCollection:
    clip: np.ndarray  # (rows, clip_dim) float32, unit rows
    dino: np.ndarray  # (rows, dino_dim) float32, unit rows
    planted: PlantedPairs


def normalise_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def sample_layout(rows: int, dim: int, layout: LayoutSpec, rng: np.random.Generator) -> np.ndarray:
    """`rows` unit vectors drawn from `layout` (float32), generated in chunks to bound memory."""
    out = np.empty((rows, dim), np.float32)
    if layout.kind == "isotropic":
        for start in range(0, rows, 65536):
            stop = min(rows, start + 65536)
            out[start:stop] = normalise_rows(rng.standard_normal((stop - start, dim), dtype=np.float32))
        return out
    if layout.kind != "clustered":
        raise ValueError(f"unknown synthetic layout {layout.kind!r} (expected 'clustered' or 'isotropic')")
    spectrum = _spectrum(dim, layout.spectrum_decay)
    mean = np.zeros(dim, np.float32)
    mean[0] = 1.0
    centres = normalise_rows(rng.standard_normal((layout.concepts, dim), dtype=np.float32) * spectrum)
    popularity = (np.arange(layout.concepts) + 1.0) ** -layout.popularity_decay
    popularity /= popularity.sum()
    for start in range(0, rows, 65536):
        stop = min(rows, start + 65536)
        concept = rng.choice(layout.concepts, size=stop - start, p=popularity)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * spectrum
        block = (
            layout.mean_weight * mean + layout.concept_weight * centres[concept] + layout.noise_weight * noise
        )
        out[start:stop] = normalise_rows(block)
    return out


def _spectrum(dim: int, decay: float) -> np.ndarray:
    """Per-dimension standard deviations with unit total variance."""
    std = (np.arange(1, dim + 1, dtype=np.float64) ** (-decay / 2)).astype(np.float32)
    return std / np.linalg.norm(std)


def vector_at_cosine(base: np.ndarray, cosine: np.ndarray, layout: LayoutSpec, rng: np.random.Generator):
    """Unit vectors whose cosine with each unit row of `base` is exactly `cosine`; the orthogonal part
    follows the layout's noise spectrum, so the pair differs along directions real data varies in."""
    n, dim = base.shape
    if layout.kind == "clustered":
        direction = rng.standard_normal((n, dim), dtype=np.float32) * _spectrum(dim, layout.spectrum_decay)
    else:
        direction = rng.standard_normal((n, dim), dtype=np.float32)
    direction -= np.sum(direction * base, axis=1, keepdims=True) * base
    direction = normalise_rows(direction)
    cosine = cosine.astype(np.float32)[:, None]
    return normalise_rows(cosine * base + np.sqrt(1.0 - cosine**2) * direction)


def make_collection(spec: SyntheticSpec) -> SyntheticCollection:
    """Draw both towers' embeddings and plant the pairs described by `spec`."""
    rng = np.random.default_rng(spec.seed)
    clip = sample_layout(spec.rows, spec.clip_dim, spec.clip_layout, rng)
    dino = sample_layout(spec.rows, spec.dino_dim, spec.dino_layout, rng)
    kinds = [spec.blind_pairs, spec.clip_near_misses, spec.dino_close_pairs, spec.duplicates]
    needed = 2 * sum(kinds)
    if needed > spec.rows:
        raise ValueError(f"{needed} rows needed for the planted pairs but the collection has {spec.rows}")
    rows = rng.choice(spec.rows, size=needed, replace=False)
    pairs = []
    start = 0
    for count in kinds:
        chosen = rows[start : start + 2 * count].reshape(count, 2)
        pairs.append(np.sort(chosen, axis=1).astype(np.int64))
        start += 2 * count
    blind, near, close, dup = pairs

    def plant(pairs: np.ndarray, clip_range, dino_range) -> None:
        a, b = pairs[:, 0], pairs[:, 1]
        clip[b] = vector_at_cosine(clip[a], rng.uniform(*clip_range, len(a)), spec.clip_layout, rng)
        dino[b] = vector_at_cosine(dino[a], rng.uniform(*dino_range, len(a)), spec.dino_layout, rng)

    plant(blind, spec.clip_range, spec.dino_blind_range)
    plant(near, spec.near_miss_range, spec.dino_blind_range)
    plant(close, spec.clip_range, spec.dino_close_range)
    clip[dup[:, 1]] = clip[dup[:, 0]]
    dino[dup[:, 1]] = dino[dup[:, 0]]
    return SyntheticCollection(clip, dino, PlantedPairs(blind, near, close, dup))
