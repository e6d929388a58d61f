"""Training the lab's toy towers: a CLIP on the world's captions, a DINOv2 by self-distillation.

`train_towers(config)` trains the towers named in `config.towers` ("clip", "ssl") into
`config.output/<name>`. Each step's pictures (and captions) are drawn from generators seeded by
(seed, step), so a run is a function of its config, and a resumed run sees the same data as an
uninterrupted one. Every `checkpoint_every` steps the whole training state is written to
`<name>/train_state.pt` (tensors only, loaded with `weights_only=True`); a run finding one with the
same config continues from its step. At the end the tower is saved as an ordinary Hugging Face
checkpoint (`CLIPModel` / `Dinov2Model`, safetensors, `preprocessor_config.json`) with
`lab_tower.json`: the config, seed, steps and the sha256 of `model.safetensors`.

This is lab code: plain PyTorch, not the library's training stage, and nothing in the model code
knows about it.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path, write_text_atomic
from ..benchmarks.provenance import sha256_of
from ..model.configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from . import world
from .augment import jitter_brightness, jitter_colour, random_crops, random_dihedral
from .ssl import SelfDistiller, distill_loss, patchify, random_patch_mask, update_centre, update_teacher

TOWERS = ("clip", "ssl")
STATE_FILE = "train_state.pt"
INFO_FILE = "lab_tower.json"
# TowersConfig.patch's default: 36 patches. Patch 4 (144 patches) ran 4x slower, about 0.1 CLIP
# steps/s on the loaded shared CPU, too slow for the ~30 min a tower may take (docs/toy-lab.md).
PATCH = 8
MAX_TEXT = 12  # caption tokens, BOS and EOS included


class LabError(ValueError):
    """A lab configuration or folder that cannot work (one line, printed by the CLI)."""


@dataclass(frozen=True)
class TowerSize:
    hidden: int = 64
    layers: int = 4
    heads: int = 4
    mlp: int = 256


@dataclass(frozen=True)
class TowersConfig:
    output: str
    seed: int = 0
    towers: tuple[str, ...] = TOWERS
    clip_steps: int = 1200
    ssl_steps: int = 500
    batch: int = 64
    lr: float = 1e-3
    checkpoint_every: int = 250
    size: TowerSize = field(default_factory=TowerSize)
    patch: int = PATCH
    clip_crop_area: tuple[float, float] = (0.8, 1.0)
    # Random flips and quarter turns for the CLIP only (its captions never name orientation,
    # position or left/right); off by default: it left the CLIP's patch tokens as they were.
    clip_flips: bool = False
    # Share of each CLIP batch made of shape pairs (two pictures identical but for the main kind's
    # shape, `world.attribute_pair`): hard negatives whose captions differ in the shape word only,
    # so colour alone cannot tell them apart. 0, the committed towers' setting: random scenes only.
    clip_shape_pairs: float = 0.0
    global_crop_area: tuple[float, float] = (0.5, 1.0)
    local_crop_area: tuple[float, float] = (0.15, 0.4)
    local_crops: int = 2
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    patch_loss_weight: float = 1.0  # iBOT's masked-patch loss against DINO's CLS loss (3 changed nothing)
    # Share of the SSL tower's views with their colour channels shuffled (and a fifth of those
    # greyed): 0, the committed towers' setting, lets two views match by colour alone.
    ssl_colour_jitter: float = 0.0
    # Weight of the SSL tower's pixel term (each patch token predicts its own patch's pixels,
    # `ssl.SelfDistiller`); 0, the committed towers' setting, trains by self-distillation alone.
    ssl_pixel_weight: float = 0.0
    threads: int | None = None
    progress: bool = True

    def fingerprint(self, tower: str) -> dict:
        """What a saved state must match to be resumed (not output, threads or progress)."""
        data = asdict(self)
        for key in ("output", "threads", "progress", "towers", "checkpoint_every"):
            data.pop(key)
        data.pop("ssl_steps" if tower == "clip" else "clip_steps")  # the other tower's length
        data["tower"] = tower
        return json.loads(json.dumps(data))


@dataclass(frozen=True)
class TowerResult:
    name: str
    path: str
    steps: int
    resumed_from: int
    final_loss: float
    seconds: float
    sha256: str


# ---------------------------------------------------------------------------------------------
# Data


def normalise(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [n, H, W, 3] -> CLIP-normalised float [n, 3, H, W] (both towers see the same input)."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD))
    return (x - mean) / std


def batch_scenes(seed: int, step: int, n: int) -> list[world.LabScene]:
    return [world.random_scene(world.scene_rng(seed, "train", step * n + i)) for i in range(n)]


def vocabulary() -> dict[str, int]:
    """Caption words -> ids; 0 pads, 1 opens, the last id closes (CLIP pools at the largest id)."""
    words = ["<pad>", "<bos>", *world.CAPTION_WORDS, "<eos>"]
    return {w: i for i, w in enumerate(words)}


def encode_captions(captions: list[str], vocab: dict[str, int]) -> torch.Tensor:
    ids = torch.zeros(len(captions), MAX_TEXT, dtype=torch.long)
    for row, text in enumerate(captions):
        tokens = [vocab["<bos>"], *(vocab[w] for w in text.split()), vocab["<eos>"]]
        if len(tokens) > MAX_TEXT:
            raise LabError(f"caption {text!r} is longer than {MAX_TEXT} tokens")
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids


# ---------------------------------------------------------------------------------------------
# Models


def clip_config(size: TowerSize, patch: int = PATCH):
    from transformers import CLIPConfig

    vocab = vocabulary()
    text = dict(vocab_size=len(vocab), hidden_size=size.hidden, intermediate_size=size.mlp, num_hidden_layers=2,
                num_attention_heads=size.heads, max_position_embeddings=MAX_TEXT, pad_token_id=0, bos_token_id=1,
                eos_token_id=len(vocab) - 1)  # fmt: skip
    vision = dict(image_size=world.SIZE, patch_size=patch, hidden_size=size.hidden, intermediate_size=size.mlp,
                  num_hidden_layers=size.layers, num_attention_heads=size.heads)  # fmt: skip
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=size.hidden)


def dinov2_config(size: TowerSize, patch: int = PATCH):
    from transformers import Dinov2Config

    return Dinov2Config(image_size=world.SIZE, patch_size=patch, hidden_size=size.hidden,
                        num_hidden_layers=size.layers, num_attention_heads=size.heads,
                        mlp_ratio=size.mlp // size.hidden)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Training steps


class ClipTrainer:
    def __init__(self, cfg: TowersConfig):
        from transformers import CLIPModel

        torch.manual_seed(cfg.seed)
        self.cfg, self.vocab = cfg, vocabulary()
        self.model = CLIPModel(clip_config(cfg.size, cfg.patch))
        self.steps = cfg.clip_steps

    def parameters(self):
        return self.model.parameters()

    def state(self) -> dict:
        return {"model": self.model.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])

    def loss(self, step: int) -> torch.Tensor:
        scenes = self._scenes(step)
        rng = np.random.default_rng([self.cfg.seed, 7, step])
        ids = encode_captions([world.caption(s, rng) for s in scenes], self.vocab)
        generator = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        pixels = normalise(np.stack([s.pixels() for s in scenes]))
        pixels = random_crops(pixels, world.SIZE, self.cfg.clip_crop_area, generator)
        if self.cfg.clip_flips:
            pixels = random_dihedral(pixels, generator)
        return self.model(
            input_ids=ids, attention_mask=(ids > 0).long(), pixel_values=pixels, return_loss=True
        ).loss

    def _scenes(self, step: int) -> list[world.LabScene]:
        scenes = batch_scenes(self.cfg.seed, step, self.cfg.batch)
        pairs = int(self.cfg.batch * self.cfg.clip_shape_pairs) // 2
        if pairs == 0:
            return scenes
        rng = np.random.default_rng([self.cfg.seed, 11, step])
        drawn = [scene for _ in range(pairs) for scene in world.attribute_pair(rng, "shape")]
        return drawn + scenes[len(drawn) :]

    def after_step(self, step: int) -> None:
        pass

    def save(self, folder: Path) -> None:
        from transformers import CLIPImageProcessor

        self.model.save_pretrained(folder)
        save_processor(CLIPImageProcessor, folder)
        write_text_atomic(folder / "vocab.json", json.dumps(self.vocab, indent=1) + "\n")


class SslTrainer:
    student_temp, teacher_temp = 0.1, 0.04

    def __init__(self, cfg: TowersConfig):
        from transformers import Dinov2Model

        torch.manual_seed(cfg.seed)
        self.cfg = cfg
        pixel_dim = 3 * cfg.patch**2 if cfg.ssl_pixel_weight > 0 else 0
        self.student = SelfDistiller(Dinov2Model(dinov2_config(cfg.size, cfg.patch)), pixel_dim=pixel_dim)
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.steps = cfg.ssl_steps

    def parameters(self):
        return self.student.parameters()

    def state(self) -> dict:
        return {"student": self.student.state_dict(), "teacher": self.teacher.state_dict()}

    def load_state(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])

    def loss(self, step: int) -> torch.Tensor:
        cfg = self.cfg
        generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        pixels = normalise(np.stack([s.pixels() for s in batch_scenes(cfg.seed, step, cfg.batch)]))
        globals_ = [jitter_brightness(random_crops(pixels, world.SIZE, cfg.global_crop_area, generator), 0.2, generator)
                    for _ in range(2)]  # fmt: skip
        locals_ = [
            random_crops(pixels, world.SIZE // 2, cfg.local_crop_area, generator)
            for _ in range(cfg.local_crops)
        ]
        if cfg.ssl_colour_jitter > 0:
            globals_, locals_ = ([self._colour(v, generator) for v in views] for views in (globals_, locals_))
        patches = (world.SIZE // cfg.patch) ** 2
        with torch.no_grad():
            teacher = [self.teacher.outputs(v) for v in globals_]
        masks = [random_patch_mask(cfg.batch, patches, cfg.mask_ratio, generator) for _ in globals_]
        student_global = [self.student.outputs(v, m) for v, m in zip(globals_, masks)]
        student_local = [self.student.outputs(v)[0] for v in locals_]
        cls_loss, terms = 0.0, 0
        for t, (t_cls, _, _) in enumerate(teacher):
            views = [s[0] for i, s in enumerate(student_global) if i != t] + student_local
            for s_cls in views:
                cls_loss, terms = cls_loss + self._distill(s_cls, t_cls, "cls_centre"), terms + 1
        patch_loss = sum(
            self._masked_patches(s[1], t[1], m) for s, t, m in zip(student_global, teacher, masks)
        )
        update_centre(self.teacher.cls_centre, torch.cat([t[0] for t in teacher]))
        update_centre(self.teacher.patch_centre, torch.cat([t[1] for t in teacher]))
        loss = cls_loss / terms + cfg.patch_loss_weight * patch_loss / len(masks)
        if cfg.ssl_pixel_weight > 0:
            loss = loss + cfg.ssl_pixel_weight * self._pixels(student_global, globals_)
        return loss

    def _pixels(self, student_global: list, views: list[torch.Tensor]) -> torch.Tensor:
        """Mean squared error of every patch token's prediction of its own patch's pixels."""
        errors = [
            (self.student.pixel_head(tokens) - patchify(view, self.cfg.patch)).pow(2).mean()
            for (_, _, tokens), view in zip(student_global, views)
        ]
        return sum(errors) / len(errors)

    def _colour(self, views: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        chosen = torch.rand(views.shape[0], generator=generator) < self.cfg.ssl_colour_jitter
        jittered = jitter_colour(views, 0.2, generator)
        return torch.where(chosen[:, None, None, None], jittered, views)

    def _distill(self, student: torch.Tensor, teacher: torch.Tensor, centre: str) -> torch.Tensor:
        return distill_loss(
            student, teacher, getattr(self.teacher, centre), self.student_temp, self.teacher_temp
        )

    def _masked_patches(
        self, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        if not mask.any():
            return torch.zeros(())
        return self._distill(student[mask], teacher[mask], "patch_centre")

    def after_step(self, step: int) -> None:
        # Teacher momentum rises from 0.99 to 1 on a cosine, as in DINO.
        momentum = 1 - 0.01 * (math.cos(math.pi * step / self.steps) + 1) / 2
        update_teacher(self.teacher, self.student, momentum)

    def save(self, folder: Path) -> None:
        from transformers import BitImageProcessor

        # The teacher is the tower (DINO keeps the EMA teacher); its heads are training-only.
        self.teacher.encoder.save_pretrained(folder)
        save_processor(BitImageProcessor, folder)


def save_processor(processor_class, folder: Path) -> None:
    """A processor that resizes to and crops `world.SIZE`, with the CLIP statistics both towers trained on."""
    side = world.SIZE
    processor_class(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                    image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD)).save_pretrained(folder)  # fmt: skip


TRAINERS = {"clip": ClipTrainer, "ssl": SslTrainer}


# ---------------------------------------------------------------------------------------------
# The loop: resume, checkpoint, progress, save


def train_towers(config: TowersConfig) -> dict[str, TowerResult]:
    """Train (or finish training) each tower in `config.towers`; returns what was saved where."""
    unknown = [t for t in config.towers if t not in TRAINERS]
    if unknown:
        raise LabError(f"unknown tower(s) {unknown}; choose from {list(TRAINERS)}")
    if config.patch < 1 or world.SIZE % config.patch:
        raise LabError(f"patch must divide the world's {world.SIZE} px side, got {config.patch}")
    if config.checkpoint_every < 1:
        raise LabError(f"checkpoint_every must be at least 1, got {config.checkpoint_every}")
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    return {name: train_one(name, config) for name in config.towers}


def train_one(name: str, cfg: TowersConfig) -> TowerResult:
    folder = Path(cfg.output) / name
    folder.mkdir(parents=True, exist_ok=True)
    trainer = TRAINERS[name](cfg)
    optimizer = torch.optim.AdamW(trainer.parameters(), lr=cfg.lr, weight_decay=0.05)
    start = _resume(folder, name, cfg, trainer, optimizer)
    began, loss_value = time.monotonic(), float("nan")
    for step in range(start, trainer.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg.lr, step, trainer.steps)
        loss = trainer.loss(step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainer.parameters(), 1.0)
        optimizer.step()
        trainer.after_step(step)
        loss_value = float(loss.detach())
        done = step + 1
        if done % cfg.checkpoint_every == 0 or done == trainer.steps:
            _save_state(folder, name, cfg, trainer, optimizer, done, loss_value)
        if cfg.progress and (done % 50 == 0 or done == trainer.steps):
            rate = (done - start) / max(time.monotonic() - began, 1e-9)
            print(f"lab towers: {name} step {done}/{trainer.steps} loss {loss_value:.4f} ({rate:.1f} steps/s)",
                  file=sys.stderr, flush=True)  # fmt: skip
    if start == trainer.steps and start > 0:  # finished before: report its last loss
        loss_value = float(torch.load(folder / STATE_FILE, weights_only=True)["loss"])
    trainer.save(folder)
    digest = sha256_of(folder / "model.safetensors")
    info = {"tower": name, "seed": cfg.seed, "steps": trainer.steps, "final_loss": loss_value,
            "model.safetensors sha256": digest, "config": cfg.fingerprint(name)}  # fmt: skip
    write_text_atomic(folder / INFO_FILE, json.dumps(info, indent=1) + "\n")
    return TowerResult(name, str(folder), trainer.steps, start, loss_value, time.monotonic() - began, digest)


def learning_rate(peak: float, step: int, steps: int) -> float:
    """Linear warm-up over the first 5% of steps, then a cosine down to 5% of the peak."""
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return peak * (0.05 + 0.95 * (1 + math.cos(math.pi * progress)) / 2)


def _resume(folder: Path, name: str, cfg: TowersConfig, trainer, optimizer) -> int:
    path = folder / STATE_FILE
    if not path.exists():
        return 0
    state = torch.load(path, weights_only=True)
    saved = json.loads(state["fingerprint"])
    if saved != cfg.fingerprint(name):
        changed = sorted(k for k in saved.keys() | cfg.fingerprint(name).keys()
                         if saved.get(k) != cfg.fingerprint(name).get(k))  # fmt: skip
        raise LabError(f"{path}: saved by a run with other settings ({', '.join(changed)}); "
                       "use another output folder or delete the file to start again")  # fmt: skip
    trainer.load_state(state["trainer"])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"])


def _save_state(
    folder: Path, name: str, cfg: TowersConfig, trainer, optimizer, step: int, loss: float
) -> None:
    state = {"trainer": trainer.state(), "optimizer": optimizer.state_dict(), "step": step, "loss": loss,
             "fingerprint": json.dumps(cfg.fingerprint(name))}  # fmt: skip
    with atomic_path(folder / STATE_FILE) as tmp:  # a crash mid-write keeps the previous state
        torch.save(state, tmp)


