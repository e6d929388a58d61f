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
import re
import shutil
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import PartialState
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, seed_worker

from ..atomic import write_text_atomic
from ..constants import IGNORE_INDEX
from ..data.packing import PackedBatchSampler
from ..data.sampler import build_train_sampler
from ..data.skips import SkipTally
from . import checkpoints
from .throughput import FlopsModel

logger = logging.getLogger(__name__)


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
        # Ours first, so the on_save callbacks after it find the checkpoint marked. Rotation waits for
        # the COMPLETE marker: the Trainer's own save_total_limit stays off.
        kwargs["callbacks"] = [MarkCompleteCallback(save_total_limit), *(kwargs.get("callbacks") or [])]
        super().__init__(*args, **kwargs)
        self.adapter_learning_rate = adapter_learning_rate
        self.group_by_modality_length = group_by_modality_length
        self.batch_arrangement = batch_arrangement
        self.packing = packing
        self.packing_tokens = packing_tokens
        self._packed_sampler: PackedBatchSampler | None = None
        self.flops_model = flops_model
        self.peak_flops = peak_flops
        self.skips = SkipTally()
        self.trainable_names = sorted(n for n, p in self.model.named_parameters() if p.requires_grad)
        self._window = {"tokens": 0, "samples": 0, "images": 0, "start": None, "step": 0}

    # -- data order -------------------------------------------------------------------------------
    @property
    def _data_order_seed(self) -> int:
        # TrainingArguments' rule: the sampler takes data_seed, and seed where it is unset.
        return self.args.seed if self.args.data_seed is None else self.args.data_seed

    # Private: the Trainer builds its sampler only here, and none of its `train_sampling_strategy`s groups
    # by modality; get_train_dataloader would have to repeat its collator/worker-seed/accelerate wiring.
    def _get_train_sampler(self, train_dataset=None):
        # A global order, seeded by (data_seed, epoch): the same on every rank and again after a resume.
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return build_train_sampler(
            dataset.lengths,
            dataset.has_image,
            per_device_batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            grad_accum=self.args.gradient_accumulation_steps,
            seed=self._data_order_seed,
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
            seed=self._data_order_seed,
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
            return self._empty_batch_loss(model, inputs, return_outputs)

        mask = inputs.get("attention_mask")  # packed batches have none: every token is real
        self._window["tokens"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        self._window["samples"] += len(samples) if samples else rows
        pixels = inputs.get("pixel_values")
        self._window["images"] += 0 if pixels is None else int(pixels.shape[0])

        result = self._objective(model, inputs, return_outputs, num_items_in_batch)
        loss = result[0] if return_outputs else result
        if not torch.isfinite(loss.detach()).item():
            raise NonFiniteLossError(
                f"loss is {loss.item()} at step {self.state.global_step + 1} "
                f"(rank {self.args.process_index}); the batch held: " + "; ".join(samples or ["<unknown samples>"])
            )
        return result

    def _empty_batch_loss(self, model, inputs, return_outputs=False):
        """A zero loss from the model run on one padding token, for a micro-batch whose samples were all skipped."""
        outputs = model(**placeholder_batch(inputs, self.processing_class))
        loss = outputs.logits.float().sum() * 0.0
        return (loss, outputs) if return_outputs else loss

    def _objective(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The training objective on a batch with rows: the model's causal-LM loss (the preference
        stage's trainer puts DPO here)."""
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    # -- optimizer --------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        decay = set(self.get_decay_parameter_names(model))
        groups: dict[tuple[float | None, bool], list] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                groups.setdefault((self._own_learning_rate(model, name), name in decay), []).append(param)
        param_groups = []
        for (own_lr, decayed), params in groups.items():
            group = {"params": params, "weight_decay": self.args.weight_decay if decayed else 0.0}
            if own_lr is not None:
                group["lr"] = own_lr
            param_groups.append(group)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def _own_learning_rate(self, model, name: str) -> float | None:
        """The rate of a parameter that does not take `learning_rate`: the adapters' (train.adapter_learning_rate)
        and LION's aggregators' (their rate, adapter or base, times mixer.aggregator.lr_multiplier)."""
        dotted = f".{name}"
        if ".mixer." not in dotted:
            return None
        own = self.adapter_learning_rate
        aggregator = getattr(getattr(model, "config", None), "mixer_spec", None)
        aggregator = getattr(aggregator, "aggregator", None)
        if ".mixer.aggregators." in dotted and aggregator is not None and aggregator.lr_multiplier != 1.0:
            return (own if own is not None else self.args.learning_rate) * aggregator.lr_multiplier
        return own

    # -- training loop ----------------------------------------------------------------------------
    def train(self, *args, **kwargs):
        """The Trainer's train(); a full disk while writing a checkpoint becomes one CheckpointWriteError."""
        try:
            return super().train(*args, **kwargs)
        except (OSError, RuntimeError) as err:
            # `should_save` is still set when the failure came from writing this step's checkpoint
            step_dir = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            culprit = _failed_checkpoint_file(err, step_dir) if self.control.should_save else None
            if culprit is None:
                raise
            raise CheckpointWriteError(_disk_full_message(step_dir, culprit)) from None

    # Private: no hook runs between the Trainer's epoch start and its first micro-batch (on_epoch_begin's
    # should_training_stop is read only after a forward/backward), and none is told the epoch number.
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
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not _internal_call:  # the final model/ or lora/ artifact: the Trainer's complete save
            return super().save_model(output_dir, _internal_call)
        # The Trainer's own calls (its checkpoints) keep only what training changes: the rest is
        # rebuilt from the run config.
        state = self._gathered_state_dict()
        if self.args.should_save:
            checkpoints.write_trainable(output_dir or self.args.output_dir, state, self.trainable_names)

    def _gathered_state_dict(self) -> dict:
        """The weights as the Trainer's save_model gathers them: under ZeRO-3 on every rank, and for a
        LoRA model without the frozen ones."""
        zero3 = self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3
        if zero3 and hasattr(self.model, "get_base_model"):
            return self.deepspeed._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=True)
        return self.accelerator.get_state_dict(self.model_wrapped)

    # Private: the Trainer loads a checkpoint's weights only here (inside train()), and its own loader
    # wants a complete or peft-format model; ours holds the trainable weights, checked by exact keys.
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = model if model is not None else self.model
        state = checkpoints.read_trainable(resume_from_checkpoint, self.trainable_names)
        model.load_state_dict(state, strict=False)
        logger.info("resumed %d trainable tensors from %s", len(state), resume_from_checkpoint)

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


# What torch's zip writer raises when a write came up short (at once, or at its next position check);
# it keeps no errno: on a checkpoint, a full disk or quota.
_TORCH_SHORT_WRITE = re.compile(
    r"inline_container\.cc:\d+\] \. (unexpected pos \d+ vs \d+|PytorchStreamWriter failed writing file .*: file write failed)"
)


def _failed_checkpoint_file(err: BaseException, step_dir: Path) -> Path | None:
    """The file of `step_dir` a write ran out of space on, or None when `err` is not that: ENOSPC/EDQUOT
    naming a file in it, or torch's short write (then the file written last, the one it was writing)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        culprit = Path(err.filename) if err.filename else _newest_file(step_dir)
    elif isinstance(err, RuntimeError) and _TORCH_SHORT_WRITE.search(str(err)):
        culprit = _newest_file(step_dir)
    else:
        return None
    if culprit is None or step_dir not in (culprit, *culprit.parents):
        return None  # metrics.jsonl or another file outside the checkpoint: not a checkpoint write
    return culprit


def _newest_file(folder: Path) -> Path | None:
    files = [path for path in folder.rglob("*") if path.is_file()] if folder.is_dir() else []
    return max(files, key=lambda path: path.stat().st_mtime_ns, default=None)


def _disk_full_message(step_dir: Path, culprit: Path) -> str:
    free = shutil.disk_usage(step_dir if step_dir.is_dir() else step_dir.parent).free / 2**30
    return (
        f"{culprit}: no space left on the device while writing {step_dir.name} ({free:.1f} GiB free now); it is "
        f"left incomplete (no {checkpoints.COMPLETE} marker), so a new start resumes from the previous complete "
        "checkpoint once space is freed"
    )


def placeholder_batch(inputs: dict[str, Any], processing_class) -> dict[str, Any]:
    """One padding token with nothing supervised, for a micro-batch whose samples were all skipped."""
    device = inputs["input_ids"].device
    pad = processing_class.pad_token_id if processing_class is not None else 0
    return {
        "input_ids": torch.full((1, 1), pad, dtype=torch.long, device=device),
        "attention_mask": torch.ones((1, 1), dtype=torch.long, device=device),
        "labels": torch.full((1, 1), IGNORE_INDEX, dtype=torch.long, device=device),
    }


class MarkCompleteCallback(TrainerCallback):
    """Once every rank has written its part of a checkpoint, rank 0 marks it COMPLETE and rotates
    (checkpoints.py); a failed write never gets here, so its checkpoint stays unmarked."""

    def __init__(self, keep: int | None):
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        PartialState().wait_for_everyone()  # the Trainer's accelerator's process group
        if args.should_save:
            checkpoints.mark_complete(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
            for removed in checkpoints.rotate(args.output_dir, self.keep):
                logger.info("removed old checkpoint %s", removed)
        PartialState().wait_for_everyone()


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
