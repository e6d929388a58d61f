"""What each stage trains. The one place that decides freezing, and it says what it decided.

    pretrain  (stage 1, feature alignment)  towers frozen, LLM frozen, adapters trained
              (I-MoF: both adapters, jointly; A-MoF: its single shared adapter)
    finetune  (stage 2, instruction tuning)  towers frozen; adapters and the LLM trained,
              fully or through LoRA on the LLM's linear layers (the adapters are then still trained in full)
    preference (stage 3, BPO's DPO)  towers and adapters frozen (BPO's recipe); the LLM trained, through
              LoRA (BPO's choice) or fully
    Stages 1 and 2 train the whole mixer, so LION's aggregators (`mixer.aggregators`, when configured)
    train with the adapters; they get their own log line.
    LION's mixture of adapters (`model.moa`, when configured) trains in stage 2 only, every adapter and
    the gates, unless `train.lion` (LION's stage-wise recipe, docs/lion.md) says what of LION's parts
    stage 1 or 2 trains: the LLM's own weights, the aggregators, which tasks' adapters, the gates. Each
    task's adapters and the gates get their own log line.
    LION's tag soft prompt (`model.tag_soft_prompt`) trains in stage 2 and has its own log line; a LoRA run
    saves its vector beside the LoRA weights (merge-lora puts it back). Stage 1 refuses a model that has
    one: LION trains the vector with the LLM, which stage 1 keeps frozen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from .config import LionStageConfig, LoraConfig

logger = logging.getLogger(__name__)
STAGES = ("pretrain", "finetune", "preference")


@dataclass(frozen=True)
class ModuleCount:
    module: str
    trainable: int
    total: int


def apply_stage(
    model: nn.Module, stage: str, lora: LoraConfig | None = None, lion: LionStageConfig | None = None
) -> nn.Module:
    """Freeze/unfreeze `model` (a MofLlavaForConditionalGeneration) for `stage`; with `lora`, wrap the
    LLM with peft LoRA adapters; `lion` says what stage 1 or 2 trains of LION's parts. Returns the
    model to train (the peft wrapper when LoRA is on)."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    if lora is not None and stage == "pretrain":
        raise ValueError("LoRA applies to the LLM, which stage 1 (pretrain) keeps frozen")
    if lion is not None and stage == "preference":
        raise ValueError("train.lion says what a stage of LION's recipe trains: pretrain or finetune, not preference")
    if lion is not None and lion.llm and stage == "pretrain":
        raise ValueError("train.lion.llm: true, but stage 1 (pretrain) keeps the LLM frozen")
    train_mixer = stage != "preference"
    model.requires_grad_(False)
    model.mixer.requires_grad_(train_mixer)
    if stage != "pretrain":
        if lora is None:
            model.language_model.requires_grad_(lion is None or lion.llm is not False)
        else:
            model = _wrap_lora(model, lora, train_mixer)
    if stage != "preference":
        _train_lion_parts(base_model(model), lion or LionStageConfig(), finetune=stage == "finetune")
    _train_tag_prompt(base_model(model), stage)
    for name, count in trainable_by_module(model).items():
        state = "trained" if count.trainable else "frozen"
        logger.info("%-8s %-28s %14s / %14s parameters", state, name, f"{count.trainable:,}", f"{count.total:,}")
    return model


def trainable_by_module(model: nn.Module) -> dict[str, ModuleCount]:
    """Trainable and total parameter counts per top-level part (towers one by one, mixer, LLM)."""
    base = base_model(model)
    parts: dict[str, nn.Module] = {f"vision_towers.{n}": t for n, t in base.vision_towers.items()}
    parts["mixer"] = base.mixer
    if len(base.mixer.aggregators):  # LION's aggregators are part of the mixer; their own line says so
        parts["mixer.aggregators"] = base.mixer.aggregators
    parts["language_model"] = base.language_model
    if base.tag_prompt is not None:  # LION's tag hint vector, beside the LLM's embeddings
        parts["tag_prompt"] = base.tag_prompt
    if base.moa is not None:  # LION's routers sit beside the LLM: each task's adapters, then the gates
        for task in base.moa.spec.tasks:
            parts[f"moa.adapters.{task}"] = [p for a in base.moa.adapters_of(task) for p in a.parameters()]
        parts["moa.gates"] = base.moa.gates()
    counts = {}
    for name, module in parts.items():
        params = list(module.parameters()) if isinstance(module, nn.Module) else module
        counts[name] = ModuleCount(
            name, sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
        )
    return counts


def _train_lion_parts(base: nn.Module, lion: LionStageConfig, finetune: bool) -> None:
    """LION's parts in stage 1 or 2, as `lion` says; unset, the MoA trains in finetune only."""
    if lion.aggregator is not None:
        base.mixer.aggregators.requires_grad_(lion.aggregator)
    if base.moa is None:
        if lion.adapters is not None:
            raise ValueError(f"train.lion.adapters {lion.adapters} names MoA adapters, but the model has no moa")
        return
    tasks = base.moa.spec.tasks
    unknown = sorted(set(lion.adapters or ()) - set(tasks))
    if unknown:
        raise ValueError(f"train.lion.adapters names {unknown}, which are not the model's moa.tasks {list(tasks)}")
    trained = (tasks if finetune else ()) if lion.adapters is None else lion.adapters
    for task in tasks:
        for adapter in base.moa.adapters_of(task):
            adapter.requires_grad_(task in trained)
    for gates in base.moa.gates():
        gates.requires_grad_(finetune if lion.gates is None else lion.gates)


def _train_tag_prompt(base: nn.Module, stage: str) -> None:
    if base.tag_prompt is None:
        return
    if stage == "pretrain":
        raise ValueError(
            "the model has LION's tag soft prompt, which LION trains with the LLM: stage 1 (pretrain) keeps "
            "the LLM frozen and its adapters artifact does not carry the vector; train it in stage finetune"
        )
    base.tag_prompt.requires_grad_(stage == "finetune")


def _wrap_lora(model: nn.Module, lora: LoraConfig, train_mixer: bool = True) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    # Only the LLM's linear layers get LoRA: never the frozen towers, never the fully trained adapters.
    llm_linear = sorted(
        {
            name.split(".")[-1]
            for name, module in model.language_model.named_modules()
            if isinstance(module, nn.Linear) and module is not model.language_model.get_output_embeddings()
        }
    )
    targets = llm_linear if lora.target_modules == "all-linear" else list(lora.target_modules)
    pattern = r"language_model\..*\.(" + "|".join(targets) + r")"
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=pattern,
        task_type=None,
    )
    wrapped = get_peft_model(model, config)
    # peft freezes everything it did not add; stage 2 trains the adapters in full (saved separately as
    # an adapters artifact, not as peft "modules_to_save" copies).
    model.mixer.requires_grad_(train_mixer)
    return wrapped


def base_model(model: nn.Module) -> nn.Module:
    """The MofLlava model itself, also when peft wraps it."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if get_base is not None else model
