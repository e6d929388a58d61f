"""Turn a LoRA run into a standalone model: the run's base model + its trained adapters + the LoRA
weights merged into the LLM, saved like any full model (no peft needed to load it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..model.adapter_artifact import load_adapters
from ..model.moa import load_moa_weights
from ..model.tag_prompt import load_tag_vector
from .config import load_run_config
from .run import load_model


def merge_lora(run_dir: str | Path, out_dir: str | Path) -> Path:
    from peft import PeftModel

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    for needed in ("run_config.yaml", "adapters", "lora"):
        if not (run_dir / needed).exists():
            raise FileNotFoundError(f"{run_dir / needed}: not found; {run_dir} is not a finished LoRA run")
    config = load_run_config(run_dir / "run_config.yaml")
    if config.train.lora is None:
        raise ValueError(f"{run_dir}: not a LoRA run (train.lora is empty); its model/ is already standalone")
    # The same base the run started from, with the adapters it trained (which replace the stage-1
    # ones it started from, so those need not exist any more).
    model, processor = load_model(replace(config.model, adapters_from=None))
    load_adapters(model, run_dir / "adapters")
    if model.moa is not None:  # LION's routers, trained beside the LoRA weights (run.py)
        load_moa_weights(model.moa, run_dir / "lora")
    if model.tag_prompt is not None:  # LION's tag vector, likewise
        load_tag_vector(model.tag_prompt, run_dir / "lora")
    merged = PeftModel.from_pretrained(model, run_dir / "lora").merge_and_unload()
    merged.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
