"""`lmms-eval --model mof_llava --model_args pretrained=DIR`: lmms-eval's tasks answered by a mof-llava
checkpoint.

The answers are made exactly as `mof-llava eval run` makes them (benchmarks/generation.py decides
that, this module only adapts lmms-eval's requests to it): the picture first (`"<image>\\n"` + the
task's text) through the conversation template (vicuna_v1 by default), left-padded batches, greedy
decoding, the decoded new tokens without special tokens, stripped; then cut at the task's `until`
strings. `loglikelihood` scores a continuation after the same prompt, batched with right padding
(positions stay those of the unpadded text).

LION's options (docs/lion.md) are applied as `mof-llava eval run` applies them (benchmarks/lion.py): a
model with a mixture of adapters answers through `moa_task`'s adapters (default: an image-level
benchmark's task), and a tag-prompt model reads LION's tag sentence before each question, its tags
looked up in `tags_file` by the document's `tags_key` field (or `no_tags=true`).

Rank and world size come from accelerate (`accelerate launch` or torchrun); on a machine without
CUDA the Accelerator is made with `cpu=True`, without which every CPU process would silently call
itself rank 0 of 1 (docs/evaluation.md, "lmms-eval").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from accelerate import Accelerator
from lmms_eval.api.model import lmms
from lmms_eval.utils import Collator
from pydantic import Field

from ..benchmarks.generation import load_model, make_generate_fn, model_info, pick_device
from ..benchmarks.lion import tagged_text
from ..constants import IMAGE_TOKEN
from ..conversation import get_template
from ..data.samples import supervised_mask
from ..paths import check_model_path
from ..typed_config import STRICT_KEYS, ConfigError, validate
from .lmms_compat import alias_filelock_api, keep_loglikelihood_pairs

logger = logging.getLogger(__name__)
# lmms-eval imports this module (get_model) before its evaluator needs either repair
alias_filelock_api()
keep_loglikelihood_pairs()

# LLaVA's model_vqa scripts generate at most 128 new tokens; a task that names no limit gets that.
DEFAULT_MAX_NEW_TOKENS = 128
# Generation settings a task may give that greedy decoding reads (top_p does nothing when greedy).
_GREEDY_KEYS = {"until", "max_new_tokens", "temperature", "do_sample", "num_beams", "top_p"}


class LmmsRequestError(ValueError):
    """A request this plugin cannot answer as asked (sampling, a video, a visual that is no image)."""


@dataclass(frozen=True)
class LmmsModelArgs:
    """`--model_args` of `lmms-eval --model mof_llava` (`key=value,key=value`). lmms-eval's own
    `--batch_size` and `--device` arrive here too."""

    __pydantic_config__ = STRICT_KEYS

    pretrained: str  # a mof-llava checkpoint folder (what `mof-llava train` writes as model/)
    device: str = "auto"  # auto: cuda:<local rank> when CUDA is present, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: Annotated[int, Field(gt=0)] = 8
    template: str = "vicuna_v1"
    image_aspect_ratio: Literal["pad", "crop"] = "pad"
    threads: Annotated[int, Field(gt=0)] | None = None  # torch threads on CPU (default: idle cores' share)
    moa_task: Literal["image", "region"] | None = None  # MoA models: the adapters that answer (default image)
    tags_file: str | None = None  # tag-prompt models: a precomputed tags file (`mof-llava tags`' input)
    tags_key: str = "question_id"  # the document field whose value keys `tags_file`
    no_tags: bool = False  # tag-prompt models: answer without tags


def read_model_args(raw: Mapping[str, Any]) -> LmmsModelArgs:
    """The model arguments checked: one-line ConfigError naming the key; unknown template refused."""
    args = validate(
        LmmsModelArgs, {k: v for k, v in raw.items() if v is not None}, "--model_args", what="model_args"
    )
    try:
        get_template(args.template)
    except ValueError as err:
        raise ConfigError(f"--model_args: template: {err}", "template") from None
    check_model_path(args.pretrained, "--model_args pretrained", hub=False)
    return args


# how the refusals of benchmarks/lion.py name the tag settings here
TAG_ARGS = ("--model_args tags_file", "--model_args no_tags")


@dataclass(frozen=True)
class LionOptions:
    moa_task: str | None  # the task whose adapters answer; None: the model has no mixture of adapters
    tags: dict[str, list[str]] | None  # tags file key -> tags; None: no tag sentence


def lion_options(args: LmmsModelArgs, saved_config: Mapping[str, Any]) -> LionOptions:
    """LION's options of the saved model as eval run decides them (benchmarks/lion.py), refused in one
    line where the model was not trained for them."""
    from ..benchmarks import lion
    from ..benchmarks.registry import Benchmark
    from ..data.tags_file import read_tags_file

    if args.moa_task is not None and saved_config.get("moa") is None:
        raise lion.LionEvalError(
            f"--model_args moa_task={args.moa_task}: the model has no mixture of adapters "
            "(its config's moa is null)"
        )
    # unset: the task an image-level benchmark declares (Benchmark's default)
    task = lion.moa_task(saved_config, args.moa_task or Benchmark.moa_task, "--model_args moa_task")
    tags_file = None if args.tags_file is None else Path(args.tags_file)
    source = lion.tag_source(saved_config, tags_file, args.no_tags, TAG_ARGS)
    return LionOptions(task, read_tags_file(tags_file) if isinstance(source, dict) else None)


def user_turn(context: str, n_images: int) -> str:
    """The user message: one `<image>` line per picture, then the task's text (LLaVA's picture-first
    order); a text that already places its `<image>` markers is kept as it is."""
    if IMAGE_TOKEN in context:
        return context
    return "\n".join([IMAGE_TOKEN] * n_images + [context])


def greedy_settings(gen_kwargs: Mapping[str, Any], task: str) -> tuple[int, list[str]]:
    """(max_new_tokens, stop strings) of a task's generation settings; sampling and beam search are
    refused rather than silently answered greedily."""
    sampling = gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0
    if sampling or int(gen_kwargs.get("num_beams") or 1) > 1:
        raise LmmsRequestError(
            f"task {task}: asks for sampling or beam search ({dict(gen_kwargs)}); mof_llava decodes "
            "greedily only: pass --gen_kwargs temperature=0,do_sample=False,num_beams=1"
        )
    ignored = tuple(sorted(set(gen_kwargs) - _GREEDY_KEYS))
    if ignored:
        _warn_unused(task, ignored)
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    return int(gen_kwargs.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS), until


@functools.cache
def _warn_unused(task: str, keys: tuple[str, ...]) -> None:
    """Once per task, not once per batch."""
    logger.warning("task %s: generation settings %s are not used by mof_llava", task, list(keys))


def cut_at_stops(text: str, until: Sequence[str]) -> str:
    """The answer up to the first of the stop strings (as lm-eval-harness cuts), stripped again."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text.strip()


def rgb_images(visuals: Any, task: str, doc_id: int) -> list:
    """A document's visuals as RGB PIL images (LLaVA's `.convert("RGB")`); anything else is refused."""
    from PIL import Image

    out = []
    for visual in visuals or []:
        if not isinstance(visual, Image.Image):
            raise LmmsRequestError(
                f"task {task}, doc {doc_id}: mof_llava answers about images, got a {type(visual).__name__} "
                f"visual ({str(visual)[:80]!r})"
            )
        out.append(visual if visual.mode == "RGB" else visual.convert("RGB"))
    return out


class MofLlava(lmms):
    """lmms-eval's "simple" model interface over a mof-llava checkpoint."""

    is_simple = True

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        self.args = read_model_args(model_args)
        # cpu=True without CUDA: otherwise accelerate leaves every CPU process rank 0 of 1.
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        device = pick_device(self.args.device, self.accelerator.local_process_index)
        if device == "cpu":
            from ..threads import apply_cpu_threads

            apply_cpu_threads(self.args.threads, "--model_args threads")
        saved = model_info(self.args.pretrained, device, self.args.dtype)["model_config"] or {}
        self.lion = lion_options(self.args, saved)  # refused before the weights load
        self.model, self.processor = load_model(self.args.pretrained, device, self.args.dtype)
        self._device = torch.device(device)
        self._template = get_template(self.args.template)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.args.batch_size

    def prompt(self, context: str, n_images: int, doc: Any = None, where: str = "") -> str:
        """The text the model reads for a task's context: the template's generation prompt, with
        LION's tag sentence before the context when the model reads tags and `doc` has a picture."""
        if self.lion.tags is not None and n_images:
            context = tagged_text(context, self._tags_of(doc, where))
        return self._template.generation_prompt(user_turn(context, n_images))

    def _tags_of(self, doc: Any, where: str) -> list[str]:
        key = self.args.tags_key
        if not isinstance(doc, Mapping) or key not in doc:
            raise LmmsRequestError(f"{where}: the document has no field {key!r} to look its tags up by "
                                   "(--model_args tags_key)")
        tags = self.lion.tags.get(str(doc[key]))
        if tags is None:
            raise LmmsRequestError(f"{where}: {self.args.tags_file} has no tags for {key} {doc[key]!r}")
        return tags

    def _task_ids(self, rows: int) -> dict[str, torch.Tensor]:
        """The forward's routing through LION's mixture of adapters (nothing for a model without one)."""
        if self.lion.moa_task is None:
            return {}
        task_id = self.model.config.moa_spec.tasks.index(self.lion.moa_task)
        return {"task_ids": torch.full((rows,), task_id, dtype=torch.long, device=self.device)}

    def _doc_prompt(self, context: str, doc_to_visual, doc_id: int, task: str, split: str) -> tuple:
        """(the document's pictures, the prompt the model reads for it)."""
        doc = self.task_dict[task][split][doc_id]
        pictures = rgb_images(doc_to_visual(doc), task, doc_id)
        return pictures, self.prompt(context, len(pictures), doc, f"task {task}, doc {doc_id}")

    # -- generation --------------------------------------------------------------------------------
    def generate_until(self, requests) -> list[str]:
        # Longest prompt first, batches of one generation setting (lmms-eval's own Collator).
        order = Collator([r.args for r in requests], lambda a: (-len(a[0]), a[0]), grouping=True)
        answers: list[str] = []
        for chunk in order.get_batched(n=self.batch_size):
            answers += self._answer(chunk)
        return order.get_original(answers)

    def _answer(self, chunk: Sequence[tuple]) -> list[str]:
        max_new_tokens, until = greedy_settings(chunk[0][1], chunk[0][4])
        images, prompts = [], []
        for context, _, doc_to_visual, doc_id, task, split in chunk:
            pictures, prompt = self._doc_prompt(context, doc_to_visual, doc_id, task, split)
            images += pictures
            prompts.append(prompt)
        generate = make_generate_fn(
            self.model, self.processor, max_new_tokens, self.args.image_aspect_ratio, self.lion.moa_task
        )
        return [cut_at_stops(text, until) for text in generate(images, prompts)]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise LmmsRequestError("mof_llava answers single-round tasks only (generate_until_multi_round)")

    # -- log-likelihood ----------------------------------------------------------------------------
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """(sum of the continuation tokens' log-probabilities, whether greedy decoding would write
        exactly them) per request, after the same prompt generation uses."""
        order = Collator([r.args for r in requests], lambda a: -len(a[0]))
        scores: list[tuple[float, bool]] = []
        for chunk in order.get_batched(n=self.batch_size):
            scores += self._score(chunk)
        return order.get_original(scores)

    def _score(self, chunk: Sequence[tuple]) -> list[tuple[float, bool]]:
        ids, masks, images = [], [], []
        for context, continuation, doc_to_visual, doc_id, task, split in chunk:
            if callable(continuation):  # a loglikelihood task's doc_to_target
                continuation = continuation(self.task_dict[task][split][doc_id])
            pictures, prompt = self._doc_prompt(context, doc_to_visual, doc_id, task, split)
            images += pictures
            text = prompt + str(continuation)
            encoded = self.processor.encode(text)
            offsets = np.asarray(encoded.offsets, dtype=np.int64).reshape(-1, 2)
            masks.append(torch.from_numpy(supervised_mask(offsets, [(len(prompt), len(text))])))
            ids.append(encoded.ids)
        return self._continuation_logprobs(ids, masks, images)

    def _continuation_logprobs(self, ids, masks, images) -> list[tuple[float, bool]]:
        batch = self.processor.pad(ids, padding_side="right")  # right: positions as unpadded
        inputs = {**{k: v.to(self.device) for k, v in batch.items()}, **self._task_ids(len(ids))}
        if images:
            pixels = self.processor.preprocess_images(images, self.args.image_aspect_ratio)
            inputs["pixel_values"] = pixels.to(device=self.device, dtype=next(self.model.parameters()).dtype)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = inputs["input_ids"][:, 1:]
        # placeholder ids (LION's tag hint, -201) are no vocabulary rows; they sit in the prompt, never scored
        picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        greedy = logprobs.argmax(-1) == targets
        out = []
        for row, mask in enumerate(masks):
            scored = mask[1:].to(self.device)  # token t is predicted at position t-1
            scored = torch.nn.functional.pad(scored, (0, targets.shape[1] - len(scored)))
            out.append((float(picked[row][scored].sum()), bool(greedy[row][scored].all())))
        return out
