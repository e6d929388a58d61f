"""`MofLlavaTrainer`: the Hugging Face Trainer with what LLaVA-style training needs on top.

- the grouped sampler (LLaVA's `group_by_modality_length`, on real token lengths); with packing,
  `PackedBatchSampler` and `PackedCollator` instead (data/packing.py): one row of samples per
  micro-batch, equal token totals across ranks. The loss is the per-token mean over the global batch
  either way (the Trainer's `num_items_in_batch`, counted over the shifted labels of every
  micro-batch of the step on every rank), so packing changes no update;
- samples the dataset could not read are counted and reported, never replaced; a micro-batch whose
  samples were all skipped still runs the model (on one padding token, with nothing supervised) so
  every rank takes part in every collective;
- a NaN/Inf loss stops the run naming the step and the samples of the batch;
- separate learning rate for the adapters (LLaVA's `--mm_projector_lr`), no weight decay on biases
  and norms;
- checkpoints hold the trainable weights only, and count only once every rank finished writing
  (see checkpoints.py); resuming loads them with exact keys; a full disk while writing one stops the
  run with one line naming the file (and the checkpoint stays incomplete);
- a run resumed from its final checkpoint trains nothing (the Trainer would train one more step when
  the last step is not at an epoch's end) and only writes the final artifacts;
- throughput in the log: tokens/s, samples/s, step time and an MFU estimate.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import seed_worker

from ..atomic import write_text_atomic
from ..constants import IGNORE_INDEX
from ..data.packing import PackedBatchSampler
from ..data.sampler import build_train_sampler
from ..data.skips import SkipTally
from . import checkpoints
from .throughput import FlopsModel

logger = logging.getLogger(__name__)

TRAINABLE_WEIGHTS = "model.safetensors"


class NonFiniteLossError(FloatingPointError):
    pass


class CheckpointWriteError(Exception):
    """A checkpoint could not be written (no space left); it is left without its COMPLETE marker."""


class MofLlavaTrainer(Trainer):
    def __init__(
        self,
        *args,
        adapter_learning_rate: float | None = None,
        group_by_modality_length: bool = True,
        batch_arrangement: str = "sorted",
        packing: bool = False,
        packing_tokens: int | None = None,
        save_total_limit: int | None = None,
        flops_model: FlopsModel | None = None,
        peak_flops: float | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.adapter_learning_rate = adapter_learning_rate
        self.group_by_modality_length = group_by_modality_length
        self.batch_arrangement = batch_arrangement
        self.packing = packing
        self.packing_tokens = packing_tokens
        self._packed_sampler: PackedBatchSampler | None = None
        self.keep_checkpoints = save_total_limit
        self.flops_model = flops_model
        self.peak_flops = peak_flops
        self.skips = SkipTally()
        self.trainable_names = sorted(n for n, p in self.model.named_parameters() if p.requires_grad)
        self._saving_checkpoint = False
        self._window = {"tokens": 0, "samples": 0, "images": 0, "start": None, "step": 0}

    # -- data order -------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        # A global order, seeded by (seed, epoch): the same on every rank and again after a resume.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return build_train_sampler(
            dataset.lengths,
            dataset.has_image,
            per_device_batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            grad_accum=self.args.gradient_accumulation_steps,
            seed=self.args.seed,
            group_by_modality_length=self.group_by_modality_length,
            arrange=self.batch_arrangement,
        )

    def get_train_dataloader(self):
        if not self.packing:
            return super().get_train_dataloader()
        # Variable-size micro-batches: a batch sampler, dealt to the ranks by accelerate (batch j to
        # rank j % world_size), so every rank runs the same number of micro-steps.
        dataset, args = self.train_dataset, self.args
        self._packed_sampler = PackedBatchSampler(
            dataset.lengths,
            dataset.has_image,
            per_device_batch_size=args.per_device_train_batch_size,
            world_size=args.world_size,
            grad_accum=args.gradient_accumulation_steps,
            seed=args.seed,
            max_tokens=self.packing_tokens,
            group_by_modality_length=self.group_by_modality_length,
            arrange=self.batch_arrangement,
        )
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self._packed_sampler,
            collate_fn=self.data_collator,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=partial(seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index),
        )
        return self.accelerator.prepare(loader)

    # -- loss -------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.skips.add(inputs.pop("skipped", []))
        samples = inputs.pop("sample_records", [])
        rows = inputs["input_ids"].shape[0]
        if rows == 0:
            outputs = model(**_placeholder_batch(inputs, self.processing_class))
            loss = outputs.logits.float().sum() * 0.0
            return (loss, outputs) if return_outputs else loss

        mask = inputs.get("attention_mask")  # packed batches have none: every token is real
        self._window["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        self._window["samples"] += len(samples) if samples else rows
        pixels = inputs.get("pixel_values")
        self._window["images"] += 0 if pixels is None else int(pixels.shape[0])

        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        if not torch.isfinite(loss.detach()).item():
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.state.global_step + 1} "
                f"(rank {self.args.process_index}); the batch held: " + "; ".join(samples or ["<unknown samples>"])
            )
        return result

    # -- optimizer --------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        decay = set(self.get_decay_parameter_names(model))
        adapter_lr = self.adapter_learning_rate
        groups: dict[tuple[bool, bool], list] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            is_adapter = ".mixer." in f".{name}"
            groups.setdefault((is_adapter and adapter_lr is not None, name in decay), []).append(param)
        param_groups = []
        for (own_lr, decayed), params in groups.items():
            group = {"params": params, "weight_decay": self.args.weight_decay if decayed else 0.0}
            if own_lr:
                group["lr"] = adapter_lr
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    # -- training loop ----------------------------------------------------------------------------
    def _run_epoch(self, model, epoch, *args, **kwargs):
        if self._packed_sampler is not None:
            # accelerate's skip wrapper (on resume) hides the batch sampler from the Trainer's set_epoch
            self._packed_sampler.set_epoch(epoch)
        # Resumed from the final checkpoint: the Trainer would run one more step of this epoch first.
        if self.state.global_step >= self.state.max_steps:
            logger.info("training already reached step %d of %d; writing the final artifacts only",
                        self.state.global_step, self.state.max_steps)
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(model, epoch, *args, **kwargs)

    # -- checkpoints ------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        step_dir = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        self._saving_checkpoint = True
        try:
            with _tracking_torch_save() as writing:
                super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as err:
            if not _is_disk_full(err):
                raise
            raise CheckpointWriteError(_disk_full_message(step_dir, writing, err)) from None
        finally:
            self._saving_checkpoint = False
        self.accelerator.wait_for_everyone()  # every rank has written its part
        if self.args.should_save:
            checkpoints.mark_complete(step_dir)
            for removed in checkpoints.rotate(self.args.output_dir, self.keep_checkpoints):
                logger.info("removed old checkpoint %s", removed)
        self.accelerator.wait_for_everyone()

    def _save(self, output_dir: str | None = None, state_dict=None):
        if not self._saving_checkpoint:
            return super()._save(output_dir, state_dict)
        # A checkpoint keeps only what training changes; the rest is rebuilt from the run config.
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        if state_dict is None:
            state_dict = self.accelerator.unwrap_model(self.model).state_dict()
        trainable = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items() if k in self._trainable_set}
        missing = sorted(self._trainable_set - set(trainable))
        if missing:
            raise RuntimeError(f"checkpoint would miss trainable weights {missing[:5]}")
        _WRITING[-1:] = [os.path.join(output_dir, TRAINABLE_WEIGHTS)]
        save_file(trainable, os.path.join(output_dir, TRAINABLE_WEIGHTS), metadata={"format": "pt"})
        (Path(output_dir) / "trainable_parameters.json").write_text(json.dumps(self.trainable_names, indent=0))

    @property
    def _trainable_set(self) -> set[str]:
        return set(self.trainable_names)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = model if model is not None else self.model
        path = Path(resume_from_checkpoint) / TRAINABLE_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; {resume_from_checkpoint} is not a complete checkpoint")
        state = load_file(str(path))
        unexpected = sorted(set(state) - self._trainable_set)
        missing = sorted(self._trainable_set - set(state))
        if unexpected or missing:
            raise ValueError(
                f"{path} does not fit this run's trainable weights (missing {missing[:5]}, unexpected {unexpected[:5]}); "
                "was it written by a run with a different stage, mixer or LoRA setting?"
            )
        model.load_state_dict(state, strict=False)
        logger.info("resumed %d trainable tensors from %s", len(state), path)

    # -- logging ----------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs.update(self._throughput())
            logs["skipped_samples"] = self._global_sum(self.skips.total)
        super().log(logs, start_time)

    def _throughput(self) -> dict[str, float]:
        window, now = self._window, time.perf_counter()
        step = self.state.global_step
        if window["start"] is None:  # first log: no interval to measure yet
            window.update(tokens=0, samples=0, images=0, start=now, step=step)
            return {}
        totals = self._global_sum_tensor([window["tokens"], window["samples"], window["images"]])
        tokens, samples, images = (int(v) for v in totals)
        elapsed, steps = now - window["start"], max(step - window["step"], 1)
        out = {
            "tokens_per_s": tokens / elapsed,
            "samples_per_s": samples / elapsed,
            "step_time_s": elapsed / steps,
        }
        if self.flops_model is not None and self.peak_flops:
            flops = self.flops_model.step_flops(tokens, images)
            out["mfu"] = flops / (elapsed * self.peak_flops * self.args.world_size)
        window.update(tokens=0, samples=0, images=0, start=now, step=step)
        return out

    def _global_sum(self, value: int) -> int:
        return int(self._global_sum_tensor([value])[0])

    def _global_sum_tensor(self, values: list[int]) -> torch.Tensor:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.args.device)
        if dist.is_available() and dist.is_initialized() and self.args.world_size > 1:
            dist.all_reduce(tensor)
        return tensor.cpu()


def _is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, or what torch's zip writer and safetensors raise when a write comes up short."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return any(sign in text for sign in ("inline_container", "PytorchStreamWriter", "No space left", "StorageFull"))


# The file a checkpoint save is writing: torch's zip writer does not say which file failed.
_WRITING: list = []


@contextmanager
def _tracking_torch_save():
    """Note the path of every `torch.save` (the Trainer's and DeepSpeed's) while a checkpoint is written."""
    original = torch.save
    _WRITING[:] = [None]

    def save(obj, f, *args, **kwargs):
        _WRITING[-1:] = [f]
        return original(obj, f, *args, **kwargs)

    torch.save = save
    try:
        yield _WRITING
    finally:
        torch.save = original


def _disk_full_message(step_dir: Path, writing: list, err: BaseException) -> str:
    culprit = getattr(err, "filename", None) or (writing[-1] if writing and writing[-1] else step_dir)
    free = shutil.disk_usage(step_dir if step_dir.is_dir() else step_dir.parent).free / 2**30
    return (
        f"{culprit}: no space left on the device while writing {step_dir.name} ({free:.1f} GiB free now); it is "
        f"left incomplete (no {checkpoints.COMPLETE} marker), so a new start resumes from the previous complete "
        "checkpoint once space is freed"
    )


def _placeholder_batch(inputs: dict[str, Any], processing_class) -> dict[str, Any]:
    """One padding token with nothing supervised, for a micro-batch whose samples were all skipped."""
    device = inputs["input_ids"].device
    pad = processing_class.pad_token_id if processing_class is not None else 0
    return {
        "input_ids": torch.full((1, 1), pad, dtype=torch.long, device=device),
        "attention_mask": torch.ones((1, 1), dtype=torch.long, device=device),
        "labels": torch.full((1, 1), IGNORE_INDEX, dtype=torch.long, device=device),
    }


class MetricsFileCallback(TrainerCallback):
    """Appends every training log line to `<output_dir>/metrics.jsonl` (main process only)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def forget_after(self, step: int) -> None:
        """Drop the lines logged after `step`: a run resumed from checkpoint `step` logs them again.
        A torn last line (the process died while writing it) goes too."""
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _logged_step(line) is not None and _logged_step(line) <= step]
        if len(kept) < len(lines):
            write_text_atomic(self.path, "".join(kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        with open(self.path, "a") as handle:
            handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")
            handle.flush()


def _logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
