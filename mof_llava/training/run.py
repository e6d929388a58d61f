"""One training run, from a RunConfig to its artifacts. Launch it with `mof-llava train`, `python
train/train.py`, `torchrun`, `deepspeed` or `accelerate launch`: the Trainer finds the distributed
setting from the launcher's environment.

Artifacts in `train.output_dir`:
    run_config.yaml       the fully resolved config (written before training starts)
    run_record.json       when it started and resumed, and the data file's fingerprint
    .run.lock             held by the launch training here (see run_folder.py)
    metrics.jsonl         every log line: loss, lr, grad norm, tokens/s, samples/s, step time, MFU
    checkpoint-<step>/    resumable checkpoints (trainable weights, optimizer, scheduler, RNG, data position)
    adapters/             stage 1: the adapters artifact stage 2 starts from (also written by LoRA runs)
    model/                stage 2 or preference (full fine-tuning): the complete model + processor
    lora/                 stage 2 or preference with LoRA: the peft adapter, beside it LION's routers
                          (moa.safetensors) and tag vector (tag_prompt.safetensors) when the model has them;
                          `mof-llava merge-lora` makes a standalone model
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from ..data.collator import LlavaCollator, PackedCollator
from ..data.dataset import LlavaDataset
from ..model.adapter_artifact import load_adapters, save_adapters
from ..model.builder import build_model
from ..model.moa import save_moa_weights
from ..model.modeling import MofLlavaForConditionalGeneration
from ..model.processing import MofLlavaProcessor
from ..model.tag_prompt import save_tag_vector
from ..preference.collator import PreferenceCollator
from ..preference.dataset import PreferenceDataset
from ..safe_load import check_checkpoint
from . import checkpoints, run_folder
from .config import ConfigError, ModelConfig, RunConfig
from .deepspeed_config import check_deepspeed_config
from .rendezvous import launch_rank, set_single_process_rendezvous
from .stages import apply_stage, trainable_by_module
from .throughput import FlopsModel, device_peak_flops

logger = logging.getLogger("mof_llava.train")


@dataclass
class TrainResult:
    output_dir: Path
    artifact: Path  # adapters/ (stage 1), model/ (stage 2) or lora/ (LoRA)
    global_step: int
    skipped_samples: int
    trainer: object  # the MofLlavaTrainer, for callers that inspect the trained model


def gradient_accumulation_steps(global_batch: int, per_device_batch: int, world_size: int) -> int:
    """The accumulation that makes `global_batch` from `per_device_batch` on `world_size` devices."""
    per_step = per_device_batch * world_size
    if global_batch % per_step:
        raise ConfigError(
            f"train.global_batch_size={global_batch} is not a multiple of per_device_batch_size={per_device_batch} "
            f"x {world_size} device(s) = {per_step}; change one of them (LLaVA-1.5 keeps the global batch fixed: "
            "256 in stage 1, 128 in stage 2)"
        )
    return global_batch // per_step


def train(config: RunConfig, callbacks: list | None = None, progress: bool = True) -> TrainResult:
    """Run one stage. `callbacks`: extra `transformers.TrainerCallback`s (metrics sinks, profilers, ...);
    `progress` False: no progress bar (metrics.jsonl still has every step).
    Rank 0 holds the run folder's lock throughout: a second launch into the folder is refused."""
    lock = run_folder.RunLock(config.train.output_dir).acquire() if launch_rank() == 0 else None
    try:
        return _train(config, callbacks, progress)
    finally:
        if lock is not None:
            lock.release()


def _train(config: RunConfig, callbacks: list | None, progress: bool) -> TrainResult:
    from transformers import set_seed

    output_dir = Path(config.train.output_dir)
    if config.train.deepspeed:  # DeepSpeed needs a rendezvous even for one process
        set_single_process_rendezvous()
    world = World.from_environment()
    rank, on_gpu = world.rank, world.on_gpu
    _setup_logging(rank)
    tcfg = config.train
    gradient_accumulation_steps(tcfg.global_batch_size, tcfg.per_device_batch_size, world.size)  # refused early
    precision = resolve_precision(tcfg.precision, on_gpu)
    if not on_gpu:
        from ..threads import apply_cpu_threads

        apply_cpu_threads(tcfg.cpu_threads, "train.cpu_threads")
    _setup_wandb(tcfg, output_dir)
    set_seed(tcfg.seed)

    deepspeed = check_deepspeed_config(tcfg)
    _check_preference_settings(config, deepspeed)
    model, processor = load_model(config.model, deepspeed_bf16=bool(tcfg.deepspeed) and precision == "bf16", on_gpu=on_gpu)
    if precision in ("bf16", "fp16"):  # frozen towers need no fp32 master weights
        model.vision_towers.to(torch.bfloat16 if precision == "bf16" else torch.float16)
    if tcfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    logger.info("stage %s: %s", tcfg.stage, config.name)
    reference = _frozen_reference(model, tcfg)
    model = apply_stage(model, tcfg.stage, tcfg.lora, tcfg.lion)

    resume = _resume_point(tcfg.resume, output_dir)
    if resume is not None:
        check_checkpoint(resume)  # before DeepSpeed unpickles anything in it (every rank: each loads its part)
    if rank == 0:
        _prepare_run_folder(config, output_dir, resume)
        config.save(output_dir / "run_config.yaml")
    args = training_arguments(config, world)
    # Rank 0 builds the record index and token-length cache; the others then read it.
    with args.main_process_first(desc="indexing the training data"):
        dataset = (PreferenceDataset if tcfg.stage == "preference" else LlavaDataset).from_config(config.data, processor)
    logger.info(dataset.summary())
    if rank == 0:
        _record_data(config, output_dir, dataset, resume)
    if tcfg.stage == "preference" and tcfg.preference.reference == "precomputed":
        _precompute_reference(config, model, processor, dataset, args)
    trainer, metrics = _make_trainer(config, model, processor, args, dataset, callbacks, reference, progress)
    if resume is not None:
        logger.info("resuming from %s", resume)
        if rank == 0:
            metrics.forget_after(checkpoints.step_of(resume))
    trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)

    artifact = _save_final(trainer, model, processor, config, output_dir)
    skipped = _report_skips(trainer, rank)
    if rank == 0:
        logger.info("training done: %s", artifact)
    return TrainResult(output_dir, artifact, trainer.state.global_step, skipped, trainer)


@dataclass(frozen=True)
class World:
    """What the Trainer's arguments take from where the run is launched, not from its config."""

    size: int = 1  # processes
    rank: int = 0
    on_gpu: bool = False

    @classmethod
    def from_environment(cls) -> World:
        # launch_rank, as the lock's: under mpirun RANK is set only once DeepSpeed starts
        return cls(int(os.environ.get("WORLD_SIZE", "1")), launch_rank(), torch.cuda.is_available())


def training_arguments(config: RunConfig, world: World):
    """The Trainer's `TrainingArguments` for this run: the run config is their one source."""
    from transformers import TrainingArguments

    tcfg = config.train
    precision = resolve_precision(tcfg.precision, world.on_gpu)
    return TrainingArguments(
        output_dir=str(Path(tcfg.output_dir)), run_name=config.name, seed=tcfg.seed,
        data_seed=tcfg.data_seed,  # unset: the trainer's sampler takes seed
        per_device_train_batch_size=tcfg.per_device_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps(
            tcfg.global_batch_size, tcfg.per_device_batch_size, world.size),
        learning_rate=tcfg.learning_rate, weight_decay=tcfg.weight_decay, max_grad_norm=tcfg.max_grad_norm,
        warmup_steps=tcfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=tcfg.lr_scheduler, num_train_epochs=tcfg.num_epochs, max_steps=tcfg.max_steps,
        bf16=precision == "bf16", fp16=precision == "fp16", tf32=tcfg.tf32 if world.on_gpu else None,
        use_cpu=not world.on_gpu,  # on CPU, without it each torchrun process silently trains alone
        deepspeed=tcfg.deepspeed, ddp_timeout=tcfg.ddp_timeout, ddp_find_unused_parameters=False,
        # the LLM only (enable_activation_checkpointing): the Trainer's option would take the towers too
        activation_checkpointing=False,
        logging_steps=tcfg.logging_steps, disable_tqdm=world.rank != 0,
        report_to=[] if tcfg.report_to == "none" else [tcfg.report_to],
        save_strategy="steps", save_steps=tcfg.save_steps,
        save_total_limit=None,  # rotation waits for the COMPLETE marker (MarkCompleteCallback)
        dataloader_num_workers=tcfg.dataloader_num_workers,
        remove_unused_columns=False, label_names=["labels"],  # the collator's batches go to the model as they are
    )


def _make_trainer(config: RunConfig, model, processor, args, dataset, callbacks: list | None, reference=None,
                  progress: bool = True):
    """The MofLlavaTrainer for this run (the PreferenceTrainer for stage preference, with its frozen
    reference copy when it uses one), and the callback that writes metrics.jsonl."""
    from ..verbosity import is_verbose
    from .preference_trainer import PreferenceTrainer
    from .trainer import MetricsFileCallback, MofLlavaTrainer

    tcfg = config.train
    metrics = MetricsFileCallback(Path(tcfg.output_dir) / "metrics.jsonl")
    if tcfg.stage == "preference":
        trainer_class, collator = PreferenceTrainer, PreferenceCollator
        extra = {"preference": tcfg.preference, "reference_model": reference}
    else:
        trainer_class, extra = MofLlavaTrainer, {}
        moa = model.config.moa_spec  # LION's mixture of adapters routes each sample by its task
        collator = partial(PackedCollator if config.data.packing else LlavaCollator, tasks=moa.tasks if moa else None)
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator(processor.pad_token_id),  # the pad id the placeholder batch uses too
        processing_class=processor,
        callbacks=[metrics, *(callbacks or [])],
        adapter_learning_rate=tcfg.adapter_learning_rate,
        group_by_modality_length=config.data.group_by_modality_length,
        batch_arrangement=config.data.batch_arrangement,
        packing=config.data.packing,
        packing_tokens=config.data.packing_tokens,
        save_total_limit=tcfg.save_total_limit,
        flops_model=FlopsModel.for_model(model),
        peak_flops=device_peak_flops(tcfg.peak_tflops),
        **extra,
    )
    if not is_verbose() or not progress:
        from .progress import quiet_progress

        quiet_progress(trainer, bar=progress)  # the loss on the bar, not a line per step (metrics.jsonl)
    return trainer, metrics


def enable_activation_checkpointing(model: MofLlavaForConditionalGeneration) -> None:
    """Recompute the LLM's layer activations in the backward pass (the towers run without autograd,
    the adapters are small). Non-reentrant, so it works with frozen inputs and under DeepSpeed."""
    llm = model.language_model
    kwargs = {"use_reentrant": False}
    if hasattr(llm, "activation_checkpointing_enable"):  # transformers' name since the 5.x series
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    llm.config.use_cache = False


# -- model ---------------------------------------------------------------------------------------------
def load_model(
    model_config: ModelConfig, deepspeed_bf16: bool = False, on_gpu: bool | None = None
) -> tuple[MofLlavaForConditionalGeneration, MofLlavaProcessor]:
    """Build (or load) the model a run starts from, with the stage-1 adapters when given."""
    model_config.check_paths()  # one line naming the key, not transformers' hub-id tracebacks
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    attn = model_config.attn_implementation
    if attn == "auto":
        attn = "flash_attention_2" if on_gpu and importlib.util.find_spec("flash_attn") else "sdpa"
    # DeepSpeed keeps fp32 master weights itself, so the model can live in bf16; plain DDP/CPU runs
    # keep fp32 weights and autocast.
    dtype = torch.bfloat16 if deepspeed_bf16 else torch.float32
    if model_config.init_from:
        model = MofLlavaForConditionalGeneration.from_pretrained(
            model_config.init_from, dtype=dtype, attn_implementation=attn, **_saved_config_with_moa(model_config)
        )
        processor = MofLlavaProcessor.from_pretrained(model_config.init_from)
        if model_config.tag_soft_prompt and model.tag_prompt is None:
            raise ConfigError(
                f"model.tag_soft_prompt: the saved model {model_config.init_from} has no tag soft prompt; build the "
                "model from components (model.llm + model.towers) to add one", key="model.tag_soft_prompt",
            )  # fmt: skip
    else:
        model, processor = build_model(model_config.recipe(), dtype=dtype, attn_implementation=attn)
    if model_config.adapters_from:
        load_adapters(model, model_config.adapters_from)  # before DeepSpeed partitions anything
        logger.info("loaded adapters from %s", model_config.adapters_from)
    return model, processor


def _saved_config_with_moa(model_config: ModelConfig) -> dict:
    """`model.moa` with `init_from`: the saved config with the mixture of adapters added (its routers
    start at the identity, modeling.py); a saved model that has another moa is refused."""
    if model_config.moa is None:
        return {}
    from ..model.configuration import MofLlavaConfig

    config = MofLlavaConfig.from_pretrained(model_config.init_from)
    if config.moa_spec is not None and config.moa_spec != model_config.moa:
        raise ConfigError(
            f"model.moa {model_config.moa.to_dict()} differs from the moa of model.init_from ({config.moa}); "
            "leave model.moa unset to keep the saved one", key="model.moa"
        )
    config.moa = model_config.moa.to_dict()
    return {"config": config}


# -- final artifacts -------------------------------------------------------------------------------------
def _save_final(trainer, model, processor: MofLlavaProcessor, config: RunConfig, output_dir: Path) -> Path:
    tcfg = config.train
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if tcfg.stage != "pretrain" and tcfg.lora is None:
        target = output_dir / "model"
        trainer.save_model(str(target))  # gathers ZeRO-3 shards
        if trainer.args.should_save:
            processor.save_pretrained(target)
        return target

    # Stage 1 and LoRA runs: the adapters artifact, from a gathered state dict under ZeRO-3.
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped if trainer.is_deepspeed_enabled else model)
    prefix = "base_model.model." if base is not model else ""
    mixer_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix + "mixer.")}
    if trainer.args.should_save:
        save_adapters(base, output_dir / "adapters", state_dict=mixer_state)
    if tcfg.lora is None:
        return output_dir / "adapters"
    target = output_dir / "lora"
    trainer.save_model(str(target))  # peft writes the LoRA weights only
    if base.moa is not None and trainer.args.should_save:  # LION's routers are no LoRA weights: beside them
        save_moa_weights({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix + "moa.")}, target)
    if base.tag_prompt is not None and trainer.args.should_save:  # LION's tag vector, likewise
        save_tag_vector({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix + "tag_prompt.")}, target)
    return target


def _report_skips(trainer, rank: int) -> int:
    import torch.distributed as dist

    tallies = [trainer.skips]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        tallies = [None] * dist.get_world_size()
        dist.all_gather_object(tallies, trainer.skips)
    from ..data.skips import SkipTally

    tally = SkipTally.merged(tallies)  # a sample two ranks were handed counts once
    if rank == 0 and tally.total:
        logger.warning(tally.summary())
    if rank == 0:
        logger.info("%d sample(s) skipped in total", tally.total)
    return tally.total


# -- the preference stage ---------------------------------------------------------------------------------
def _check_preference_settings(config: RunConfig, deepspeed: dict | None) -> None:
    """Refuse the preference settings that cannot work, before a model is loaded."""
    tcfg = config.train
    if tcfg.stage != "preference":
        return
    if config.data.packing:
        raise ConfigError("data.packing: the preference stage pads each pair's two conversations to one length; "
                          "set data.packing: false")
    reference = tcfg.preference.reference
    zero_stage = ((deepspeed or {}).get("zero_optimization") or {}).get("stage")
    if reference == "frozen_copy" and zero_stage == 3:
        raise ConfigError(f"train.preference.reference: frozen_copy keeps a whole copy of the model on every rank, "
                          f"which ZeRO-3 ({tcfg.deepspeed}) does not partition; use train.lora with lora_disabled")


def _precompute_reference(config: RunConfig, model, processor, dataset, args) -> None:
    """Reference precomputed: rank 0 computes the log-probs (or reads them back on a resume) and caches
    them in the run folder, then the other ranks read them (reference_logps.py)."""
    from .reference_logps import load_or_compute

    tcfg = config.train
    collator = PreferenceCollator(processor.pad_token_id)
    with args.main_process_first(desc="reference log-probs"):
        dataset.reference_logps = load_or_compute(
            model, dataset, collator, tcfg.per_device_batch_size, tcfg.preference.chunk_size,
            Path(tcfg.output_dir), args.device,
        )  # fmt: skip


def _frozen_reference(model, tcfg):
    """The frozen copy of the starting model that reference frozen_copy scores against, else None."""
    if tcfg.stage != "preference" or tcfg.preference.reference != "frozen_copy":
        return None
    return copy.deepcopy(model).requires_grad_(False).eval()


# -- environment ---------------------------------------------------------------------------------------
def resolve_precision(precision: str, on_gpu: bool) -> str:
    """`train.precision` on this machine: auto is bf16 on GPUs that have it, fp32 otherwise."""
    if precision == "auto":
        return "bf16" if on_gpu and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("bf16", "fp16") and not on_gpu:
        raise ConfigError(f"train.precision={precision} needs a GPU; use fp32 (or auto) on CPU")
    return precision


def _setup_wandb(tcfg, output_dir: Path) -> None:
    if tcfg.report_to != "wandb":
        return
    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("train.report_to=wandb but wandb is not installed: pip install 'mof-llava[wandb]' or report_to=none")
    os.environ.setdefault("WANDB_PROJECT", tcfg.wandb_project)
    os.environ.setdefault("WANDB_DIR", str(output_dir))
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"  # logs locally; `wandb sync` uploads later


def _setup_logging(rank: int) -> None:
    import transformers

    from ..verbosity import is_verbose, setup_logging, transformers_level

    level = logging.INFO if rank == 0 else logging.WARNING
    setup_logging(level, f"%(asctime)s [rank {rank}] %(name)s: %(message)s", force=True)
    logging.getLogger("mof_llava").setLevel(logging.DEBUG if is_verbose() and rank == 0 else level)
    transformers.logging.set_verbosity(transformers_level())
    if not is_verbose():
        transformers.logging.disable_progress_bar()  # weight loading, shard writing: not the run's news


def _resume_point(resume: str | None, output_dir: Path) -> Path | None:
    if resume in (None, "none", "never"):
        return None
    if resume == "auto":
        for partial in checkpoints.incomplete_checkpoints(output_dir):
            logger.warning("ignoring %s: it was not completely written (the run stopped while saving it)", partial)
        return checkpoints.latest_complete_checkpoint(output_dir)
    path = Path(resume)
    if not (path / checkpoints.COMPLETE).is_file():
        raise ConfigError(f"train.resume={resume}: not a complete checkpoint (no {checkpoints.COMPLETE} marker)")
    return path


def _prepare_run_folder(config: RunConfig, output_dir: Path, resume: Path | None) -> None:
    """A fresh start moves another run's files aside; a resume must continue the run it belongs to."""
    if resume is None:
        if config.train.resume == "auto":
            run_folder.refuse_retraining_a_finished_run(output_dir)
        run_folder.move_aside(output_dir)
    else:
        _check_resumable_config(config, output_dir)


def _check_resumable_config(config: RunConfig, output_dir: Path) -> None:
    """Refuse to continue a run in `output_dir` with settings that would change what it learns; log
    the changed settings that are applied (run_folder.py lists which are which)."""
    import yaml

    previous = output_dir / "run_config.yaml"
    if config.train.resume != "auto" or not previous.is_file():
        return  # an explicit train.resume=PATH is a deliberate choice
    if checkpoints.latest_complete_checkpoint(output_dir) is None:
        return
    run_folder.check_resume_settings(yaml.safe_load(previous.read_text()), config.to_dict(), output_dir)


def _record_data(config: RunConfig, output_dir: Path, dataset: LlavaDataset, resume: Path | None) -> None:
    fingerprint = run_folder.data_fingerprint(config.data.data_path, dataset.records.index)
    if resume is not None and config.train.resume == "auto":
        run_folder.check_data_unchanged(output_dir, fingerprint)
    run_folder.write_run_record(output_dir, config, fingerprint, resume)


def finish_distributed() -> None:
    """Tear the process group down at the end of a launched run. Callers drop their `TrainResult`
    first: its trainer holds the DeepSpeed engine, whose pending gloo work freed only at interpreter
    exit aborts the process after a finished run (5 of 13 runs of the two-rank packing tests)."""
    import gc

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        gc.collect()  # the trainer's reference cycles keep the engine alive past `del`
        dist.barrier()
        dist.destroy_process_group()  # without it, CPU/gloo runs sometimes abort at exit


__all__ = [
    "TrainResult", "World", "finish_distributed", "gradient_accumulation_steps", "load_model", "resolve_precision",
    "train", "trainable_by_module", "training_arguments",
]
