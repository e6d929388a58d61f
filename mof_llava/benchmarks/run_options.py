"""The model flags of `mof-llava eval run`: which model, where, on what, how many at a time.

`RunFlags` is what every benchmark's run takes (the runner's settings); `MllmRunFlags` adds what
generating with a mof-llava checkpoint needs. A benchmark with another kind of model names its own
subclass in `Benchmark.run_flags` (MMVP-VLM's CLIP models). `evaluate.EvalConfig` extends
`MllmRunFlags`, so these fields, defaults and help are the library's too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.images import DEFAULT_IMAGE_LOADING, IMAGE_LOADINGS
from .registry import option, positive_int


@dataclass(frozen=True, kw_only=True)
class RunFlags:
    model: Path = option(help="mof-llava checkpoint folder")
    output_dir: Path | None = option(
        None,
        "default: eval_results/<name>/<bench>, <name> being the model folder's name, or for a "
        "training stage's model/ folder the run's: runs/imof-7b/stage2/model -> imof-7b-stage2",
    )
    batch_size: int = option(8, "questions per batch")
    device: str = option("auto", "auto (cuda:<local rank> if available, else cpu), cpu, cuda:0 ...")
    threads: int | None = option(
        None,
        "torch threads per process on CPU (default: this process's share of the idle cores)",
        parse=positive_int,
    )
    limit: int | None = option(None, "only the first N questions (smoke runs; not scored)")
    model_id: str | None = option(
        None, "model_id written into answer lines (default: <name> of the output folder)"
    )
    no_progress: bool = option(False, "no progress bar")


@dataclass(frozen=True, kw_only=True)
class MllmRunFlags(RunFlags):
    dtype: str = option(
        "auto",
        "weights and activations (default auto: bfloat16 on a GPU that supports it, else float32)",
        choices=["auto", "float32", "bfloat16", "float16"],
    )
    image_loading: str = option(
        DEFAULT_IMAGE_LOADING,
        "how image files become RGB: reference (default): PIL's convert('RGB') as LLaVA and MMVP "
        "do; viewer: EXIF orientation applied, transparency over white. Use the training setting",
        choices=IMAGE_LOADINGS,
    )
    max_new_tokens: int | None = option(
        None, "default: the benchmark's reference setting", parse=positive_int
    )
