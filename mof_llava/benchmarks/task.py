"""What the runner needs to know about a benchmark: its questions (text + image) and how to score.

Each benchmark module builds an `EvalTask` from its files; the runner generates one answer per
`EvalQuestion` and hands the finished answer file to `EvalTask.score`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.images import DEFAULT_IMAGE_LOADING


@dataclass(frozen=True)
class EvalQuestion:
    """One generation request.

    `text` is the user's question as LLaVA's answer files record it in `prompt` (without the
    `<image>` line); the model reads `"<image>\\n" + text` through the task's template.
    """

    question_id: int | str
    text: str
    image_path: Path | None = None
    image_base64: str | None = None  # MMBench keeps its pictures inside the TSV
    record_prompt: str | None = None  # the answer line's `prompt` when it is not `text` (MMBench)
    answer_fields: Mapping[str, Any] = field(default_factory=dict)  # extra fields of the answer line

    def load_image(self, loading: str = DEFAULT_IMAGE_LOADING):
        from ..data.images import ImageLoadError, load_rgb_image

        if self.image_path is not None:
            return load_rgb_image(self.image_path, loading)
        if self.image_base64 is None:
            raise ImageLoadError(f"question {self.question_id}", "the question has no image")
        try:
            data = base64.b64decode(self.image_base64, validate=False)
        except (binascii.Error, ValueError) as err:
            raise ImageLoadError(
                f"question {self.question_id} (base64 image)", f"invalid base64 ({err})"
            ) from None
        return load_rgb_image(data, loading)


@dataclass
class EvalTask:
    """A benchmark ready to run: questions in benchmark order, generation settings, provenance and
    the scorer of a finished answer file (returns the metrics dict with `score` on 0-100)."""

    benchmark: str
    questions: list[EvalQuestion]
    template: str | None  # the conversation template; None: the model reads the text as it is
    max_new_tokens: int
    settings: dict[str, Any]  # prompt variant, label set, grader ...: recorded in the metrics
    data_files: dict[str, str]  # role -> path: recorded in the metrics
    score: Callable[[Path], dict[str, Any]]
    # LLaVA-1.5 pads pictures to a square for evaluation; MMVP's official script resizes and crops
    image_aspect_ratio: str = "pad"
    # how image files become RGB (data/images.py): the references' `.convert("RGB")` by default
    image_loading: str = DEFAULT_IMAGE_LOADING
    # files the scorer writes next to the answers (e.g. GQA's predictions JSON): name -> writer(answers, out_path)
    exports: dict[str, Callable[[Path, Path], None]] = field(default_factory=dict)
    # LION (benchmarks/lion.py), set for the model evaluated: the MoA task answering (None: the model
    # has no MoA) and where the tag prompt's tags come from (None: no tag prompt; "none"; the file)
    moa_task: str | None = None
    tags: str | dict[str, str] | None = None
