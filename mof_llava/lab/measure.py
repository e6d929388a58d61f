"""What the lab's towers see: per attribute, how different a pair of pictures differing only in
that attribute looks to each tower, how well a linear probe reads the attribute, and how well a
small attentive reader (the kind of readout an MLLM can learn) reads it from the patch tokens.

Features are the ones the MLLM reads, taken through the project's own tower wrappers
(`mof_llava.model.towers.VisionTower`, with the layers `mof_recipe` picks: CLIP's layer -2 patch
tokens, DINOv2's last block before its final LayerNorm), plus each tower's global embedding (CLIP's
projected `image_embeds`, DINOv2's CLS after the LayerNorm: what mining compares).

Cosines of different towers live on different scales, so a pair's difference is reported as a
*relative distance*: (1 - cos(pair)) / median(1 - cos(random pair)), 0 for pictures a tower cannot
tell apart, about 1 for a pair as different as two random scenes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import world
from .towers import normalise

FEATURES = ("tokens", "mean", "global")
PROBES = FEATURES + ("reader",)  # "reader": `attentive_probe` on the unflattened patch tokens


@dataclass(frozen=True)
class MeasureConfig:
    seed: int = 0
    pairs: int = 100  # per attribute
    random_pairs: int = 200
    probe_train: int = 1200
    probe_test: int = 400
    reader_steps: int = 400  # `attentive_probe` training steps; 0 leaves the reader probe out

    def __post_init__(self):
        if self.reader_steps < 0:
            raise ValueError(f"reader_steps {self.reader_steps}: a number of steps, 0 or more")


def load_towers(clip_path: str, ssl_path: str) -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    """{"clip": (VisionTower, global model), "ssl": ...}, loaded as `build_model` loads towers."""
    from transformers import AutoModel, CLIPModel

    from ..model.builder import _load_complete, _preprocessing_stats, _vision_config, mof_recipe
    from ..model.configuration import TowerSpec
    from ..model.towers import VisionTower

    recipe = mof_recipe(llm="", clip=clip_path, dinov2=ssl_path)
    loaded = {}
    for name, tower in zip(("clip", "ssl"), recipe.towers):
        config, stats = _vision_config(tower.path), _preprocessing_stats(tower.path)
        spec = TowerSpec(name=name, vision_config=config.to_dict(), feature_layer=tower.feature_layer,
                         drop_prefix_tokens=tower.drop_prefix_tokens, image_mean=stats["image_mean"],
                         image_std=stats["image_std"], pos_interpolation=tower.pos_interpolation)  # fmt: skip
        wrapper = VisionTower(spec, stats["image_size"], stats["image_mean"], stats["image_std"])
        wrapper.attach_encoder(_load_complete(AutoModel._model_mapping[type(config)], tower.path))
        global_model = _load_complete(CLIPModel, tower.path) if name == "clip" else wrapper.encoder
        loaded[name] = (wrapper, global_model.eval())
    return loaded


@torch.no_grad()
def features(tower, global_model, scenes: list[world.LabScene], batch: int = 128) -> dict[str, torch.Tensor]:
    """{"tokens": [n, P*D] flattened patch tokens, "mean": [n, D], "global": [n, E],
    "patches": [n, P, D]}."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURES + ("patches",)}
    for start in range(0, len(scenes), batch):
        pixels = normalise(np.stack([s.pixels() for s in scenes[start : start + batch]]))
        tokens = tower(pixels).float()
        out["patches"].append(tokens)
        out["tokens"].append(tokens.flatten(1))
        out["mean"].append(tokens.mean(1))
        if hasattr(global_model, "get_image_features"):
            out["global"].append(_as_tensor(global_model.get_image_features(pixel_values=pixels)))
        else:
            out["global"].append(global_model(pixel_values=pixels).pooler_output)
    return {k: torch.cat(v) for k, v in out.items()}


def _as_tensor(value) -> torch.Tensor:
    # transformers 5 may return an output object from get_image_features
    return value if isinstance(value, torch.Tensor) else value.pooler_output


def pair_distances(feats_a: torch.Tensor, feats_b: torch.Tensor, scale: float) -> torch.Tensor:
    return (1 - F.cosine_similarity(feats_a, feats_b, dim=1)) / scale


def random_scale(feats: torch.Tensor) -> float:
    """Median cosine distance of random pairs (rows 2i, 2i+1)."""
    return float((1 - F.cosine_similarity(feats[0::2], feats[1::2], dim=1)).median())


def linear_probe(train_x, train_y, test_x, test_y, penalty: float = 1e-3, iterations: int = 100) -> float:
    """Test accuracy of a multinomial logistic regression (standardised features, L2, L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    weight = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y) + penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((test_x @ weight + bias).argmax(1) == test_y).float().mean())


def attentive_probe(train_x, train_y, test_x, test_y, steps: int = 400, width: int = 64, seed: int = 0) -> float:
    """Test accuracy of a small attention reader over patch tokens [n, P, D]: a per-token MLP with
    learned position embeddings, attention pooling by four learned queries, a linear head (AdamW,
    full batch).

    A linear probe on flattened tokens must learn every grid position separately, so it misses a
    small detail that can sit anywhere; this reader is position-aware but shares its weights
    across positions, as an MLLM's attention does."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean((0, 1)), train_x.std((0, 1)) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    classes = int(max(train_y.max(), test_y.max())) + 1
    reader = _Reader(train_x.shape[1], train_x.shape[2], width, classes, generator)
    optimizer = torch.optim.AdamW(reader.parameters(), lr=3e-3, weight_decay=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(reader(train_x), train_y).backward()
        optimizer.step()
    with torch.no_grad():
        return float((reader(test_x).argmax(1) == test_y).float().mean())


class _Reader(torch.nn.Module):
    def __init__(self, patches: int, dim: int, width: int, classes: int, generator: torch.Generator, queries: int = 4):
        super().__init__()
        self.embed = torch.nn.Sequential(torch.nn.Linear(dim, width), torch.nn.GELU(), torch.nn.Linear(width, width))
        self.position = torch.nn.Parameter(torch.zeros(patches, width))
        self.query = torch.nn.Parameter(torch.zeros(width, queries))
        self.head = torch.nn.Linear(width * queries, classes)
        with torch.no_grad():  # seeded, so a probe's number does not depend on the global RNG
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * (0.02 if p.dim() == 1 else p.shape[-1] ** -0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.position
        weights = torch.softmax(h @ self.query / h.shape[-1] ** 0.5, dim=1)  # [n, P, queries]
        return self.head(torch.einsum("npq,npw->nqw", weights, h).flatten(1))


def measure(clip_path: str, ssl_path: str, cfg: MeasureConfig) -> dict:
    """{tower: {"distance": {feature: {attribute: mean relative distance}},
    "probe": {feature or "reader": {attribute: accuracy}}, "chance": {attribute: majority share}}}."""
    towers = load_towers(clip_path, ssl_path)
    pairs = {a: [world.attribute_pair(world.scene_rng(cfg.seed, "pairs", k * 97 + i), a) for i in range(cfg.pairs)]
             for k, a in enumerate(world.ATTRIBUTES)}  # fmt: skip
    randoms = [
        world.random_scene(world.scene_rng(cfg.seed, "random", i)) for i in range(2 * cfg.random_pairs)
    ]
    probe = [
        world.random_scene(world.scene_rng(cfg.seed, "probe", i))
        for i in range(cfg.probe_train + cfg.probe_test)
    ]
    result: dict = {"chance": _chance(probe, cfg.probe_train)}
    for name, (tower, global_model) in towers.items():
        scale = {f: random_scale(v) for f, v in features(tower, global_model, randoms).items()}
        distance: dict = {f: {} for f in FEATURES}
        for attribute, members in pairs.items():
            a = features(tower, global_model, [p[0] for p in members])
            b = features(tower, global_model, [p[1] for p in members])
            for f in FEATURES:
                distance[f][attribute] = float(pair_distances(a[f], b[f], scale[f]).mean())
        result[name] = {
            "distance": distance,
            "probe": _probes(features(tower, global_model, probe), probe, cfg),
        }
    return result


def _probes(feats: dict[str, torch.Tensor], scenes: list[world.LabScene], cfg: MeasureConfig) -> dict:
    table: dict = {f: {} for f in (PROBES if cfg.reader_steps else FEATURES)}
    for attribute in world.ATTRIBUTES:
        rows, ys = _labelled(scenes, attribute)
        train = rows < cfg.probe_train
        for f in FEATURES:
            x = feats[f][rows]
            table[f][attribute] = linear_probe(x[train], ys[train], x[~train], ys[~train])
        if cfg.reader_steps:
            x = feats["patches"][rows]
            table["reader"][attribute] = attentive_probe(
                x[train], ys[train], x[~train], ys[~train], steps=cfg.reader_steps, seed=cfg.seed
            )
    return table


def _labelled(scenes: list[world.LabScene], attribute: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the scenes the attribute applies to, and their classes."""
    found = [(i, world.labels(s)[attribute]) for i, s in enumerate(scenes)]
    kept = [(i, y) for i, y in found if y is not None]
    return torch.tensor([i for i, _ in kept]), torch.tensor([y for _, y in kept])


def _chance(scenes: list[world.LabScene], train: int) -> dict[str, float]:
    """Test accuracy of always answering the training split's most common class."""
    shares = {}
    for attribute in world.ATTRIBUTES:
        rows, ys = _labelled(scenes, attribute)
        majority = int(torch.bincount(ys[rows < train]).argmax())
        shares[attribute] = float((ys[rows >= train] == majority).float().mean())
    return shares
