"""LION's options at evaluation time: which adapter of the mixture answers, and the tag prompt.

- Mixture of adapters: a benchmark declares the task its questions belong to (`Benchmark.moa_task`:
  REC "region", the others "image"). A model with `moa` generates every row with that task's id;
  a model without it gets no task ids.
- Tag soft prompt: a model with `tag_hint_token_id` reads LION's tag sentence before each question,
  as training writes it (data/tag_prompt.py) but with every tag in the file's order (no dropout or
  shuffle at evaluation); the tags come from a precomputed tags file (mof_llava/tags/). Evaluating
  such a model without tags takes an explicit `no_tags`; a tags file for a model without the prompt
  is refused.

Both decisions are read from the saved config.json, before any answer is recorded, and go into the
run signature (runner.py), so answers made one way never mix with answers made another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data.tag_prompt import tag_prompt
from .task import EvalQuestion

NO_TAGS = "none"  # the signature's `tags` of a run made with `no_tags`
TAG_FLAGS = ("--tags-file", "--no-tags")  # eval run's names of the two tag settings


class LionEvalError(ValueError):
    """An evaluation that cannot be made as the model was trained (one line naming what is wrong)."""


def moa_task(saved_config: Mapping[str, Any], task: str, benchmark: str) -> str | None:
    """The MoA task the model answers `benchmark`'s questions with; None for a model without MoA."""
    from ..model.configuration import MoaSpec

    if saved_config.get("moa") is None:
        return None
    tasks = MoaSpec.from_dict(saved_config["moa"]).tasks
    if task not in tasks:
        raise LionEvalError(
            f"{benchmark}: its questions are {task!r}-level, but the model's moa.tasks are {list(tasks)}"
        )
    return task


def tag_source(
    saved_config: Mapping[str, Any], tags_file: Path | None, no_tags: bool, flags: tuple[str, str] = TAG_FLAGS
) -> str | dict | None:
    """What the run's prompts take their tags from: None (the model has no tag prompt), `NO_TAGS`,
    or the tags file with its sha256. `flags`: how the refusals name the two settings."""
    file_flag, no_tags_flag = flags
    if tags_file is not None and no_tags:
        raise LionEvalError(f"{file_flag} and {no_tags_flag} exclude each other")
    if saved_config.get("tag_hint_token_id") is None:
        if tags_file is not None or no_tags:
            flag = f"{file_flag} {tags_file}" if tags_file is not None else no_tags_flag
            raise LionEvalError(
                f"{flag}: the model has no tag soft prompt (its config's tag_hint_token_id is null)"
            )
        return None
    if no_tags:
        return NO_TAGS
    if tags_file is None:
        raise LionEvalError(
            f"the model was trained with LION's tag soft prompt (config tag_hint_token_id): give its tags "
            f"with {file_flag} (a precomputed tags file, see `mof-llava tags`), "
            f"or evaluate without them with {no_tags_flag}"
        )
    path = Path(tags_file)
    if not path.is_file():
        raise LionEvalError(f"{file_flag} {path}: no such file")
    return {"file": str(path.resolve()), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def tagged_text(text: str, tags: Sequence[str]) -> str:
    """A question with LION's tag sentence in front (the prompt builder puts the `<image>` line first,
    so the sentence follows it, where training's `with_tag_prompt` puts it)."""
    return tag_prompt(list(tags)) + text


def tagged_questions(questions: Sequence[EvalQuestion], tags_file: Path) -> list[EvalQuestion]:
    """Each question with LION's tag sentence in front, as training's `with_tag_prompt` puts it after
    the `<image>` line; the answer lines keep the question as it was (`record_prompt`)."""
    from ..data.tags_file import read_tags_file

    tags = read_tags_file(Path(tags_file))
    return [
        replace(
            q, text=tagged_text(q.text, _tags_of(q, tags, tags_file)), record_prompt=q.record_prompt or q.text
        )
        for q in questions
    ]


def _tags_of(q: EvalQuestion, tags: Mapping[str, list[str]], tags_file: Path) -> list[str]:
    for key in image_keys(q):
        if key in tags:
            return tags[key]
    where = f"image {q.image_path}" if q.image_path is not None else "an image inside the benchmark file"
    raise LionEvalError(f"{tags_file}: no tags for question {q.question_id} ({where})")


def image_keys(q: EvalQuestion) -> list[str]:
    """The tags file keys that name `q`'s image, longest first: its path, then every shorter tail of
    it (`val2014/x.jpg`, `x.jpg`), so a file keyed relative to any image folder serves; a picture
    held inside the benchmark file (MMBench) is keyed by its question id."""
    if q.image_path is None:
        return [str(q.question_id)]
    parts = Path(q.image_path).parts
    return [str(q.image_path)] + ["/".join(parts[i:]) for i in range(1, len(parts))]
