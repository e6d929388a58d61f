"""Error injection for BPO's text-side negatives: a rewriter turns a ground-truth answer into a
plausible but wrong one (BPO's `llm-hal`). Every rewriter has one method,
`rewrite(items) -> texts`, one text per item, in order, so the negative generator batches them all alike.

- `RuleRewriter`: deterministic swaps of numbers, colours and common (COCO) objects; for tests and
  runs without an LLM.
- `CausalLMRewriter`: a local transformers causal LM (BPO uses the MLLM's own base LLM) prompted with
  one of BPO's two templates (templates/*.txt) inside the Vicuna chat wrapper, sampled as BPO samples
  (temperature 0.8, top-p 0.95).
- `EndpointRewriter`: the same prompt sent to an OpenAI-compatible chat endpoint (benchmarks/judge.py's client).
- `VLLMRewriter`: the same prompt through vLLM (optional extra `mof-llava[vllm]`), BPO's own choice.
- `PrecomputedRewriter`: rewrites made elsewhere, read from a JSONL file by record id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

from ..conversation import get_template
from ..data.record_file import scan_file

TEMPLATES = ("description", "qa")
REWRITERS = ("rule", "hf", "endpoint", "vllm", "precomputed")


class RewriterError(ValueError):
    """A rewriter cannot be built or cannot answer; the message names the file, id or setting."""


@dataclass(frozen=True)
class RewriteItem:
    id: str
    question: str  # the prompt without its <image> marker
    response: str  # the ground-truth answer to corrupt


class Rewriter(Protocol):
    def rewrite(self, items: list[RewriteItem]) -> list[str]: ...


def load_template(name: str) -> str:
    """One of BPO's two error-injection prompts (a `str.format` template; see templates/README.md)."""
    if name not in TEMPLATES:
        raise RewriterError(f"rewrite template must be one of {', '.join(TEMPLATES)}, got {name!r}")
    return resources.files(__package__).joinpath("templates", f"{name}.txt").read_text("utf-8").strip()


def injection_prompt(item: RewriteItem, template: str) -> str:
    """The instruction for one item: the template filled in (the `{question}` field is optional)."""
    return template.format(question=item.question, response=item.response)


def vicuna_prompt(instruction: str) -> str:
    """BPO wraps the instruction in Vicuna's chat format for the base LLM."""
    return get_template("vicuna_v1").generation_prompt(instruction)


# -- rule-based -----------------------------------------------------------------------------------
_NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_COLOURS = [
    "red",
    "blue",
    "green",
    "yellow",
    "white",
    "black",
    "brown",
    "orange",
    "pink",
    "purple",
    "grey",
    "gray",
]
# Pairs of COCO categories that are swapped both ways.
_OBJECT_PAIRS = [("dog", "cat"), ("car", "bus"), ("man", "woman"), ("boy", "girl"), ("horse", "cow"),
                 ("chair", "couch"), ("cup", "bowl"), ("fork", "knife"), ("apple", "banana"), ("bicycle", "motorcycle"),
                 ("train", "truck"), ("table", "bed"), ("laptop", "book"), ("bird", "kite"), ("pizza", "cake"),
                 ("sheep", "elephant"), ("bottle", "vase"), ("umbrella", "clock")]  # fmt: skip


_IRREGULAR_PLURALS = {"man": "men", "woman": "women", "knife": "knives", "sheep": "sheep"}


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _swap_table() -> dict[str, str]:
    table = {w: _NUMBER_WORDS[(i + 1) % len(_NUMBER_WORDS)] for i, w in enumerate(_NUMBER_WORDS)}
    colours = [c for c in _COLOURS if c != "gray"]
    table.update({c: colours[(i + 1) % len(colours)] for i, c in enumerate(colours)})
    table["gray"] = table["grey"]
    for a, b in _OBJECT_PAIRS:  # singular and plural, both ways
        table.update({a: b, b: a, _plural(a): _plural(b), _plural(b): _plural(a)})
    return table


_SWAPS = _swap_table()
_WORD = re.compile(r"\b(\d+|[A-Za-z]+)\b")


class RuleRewriter:
    """Swaps every number (n -> n + 1; "one" -> "two" ... "ten" -> "one"), colour (a fixed cycle) and
    listed object (dog <-> cat, car <-> bus, ...), keeping capitalisation. The same text always gives
    the same rewrite; a text with nothing to swap comes back unchanged (the generator counts those)."""

    def rewrite(self, items: list[RewriteItem]) -> list[str]:
        return [_WORD.sub(self._swap, item.response) for item in items]

    @staticmethod
    def _swap(match: re.Match) -> str:
        word = match.group(0)
        if word.isdigit():
            return str(int(word) + 1)
        new = _SWAPS.get(word.lower())
        if new is None:
            return word
        if word.isupper() and len(word) > 1:
            return new.upper()
        return new.capitalize() if word[0].isupper() else new


# -- language models ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """BPO's error-injection sampling (error_injection.py)."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 0


class CausalLMRewriter:
    """A local transformers causal LM (safetensors or a weights-only checkpoint; no remote code),
    batched with left padding and sampled; each batch is seeded from `sampling.seed` and its first id,
    so a resumed run redraws the same text for the same batch."""

    def __init__(
        self, model_path: str | Path, template: str, sampling: Sampling = Sampling(), device: str = "cpu"
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..paths import check_model_path

        check_model_path(str(model_path), "--rewriter-model")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.unk_token or self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path).to(device).eval()
        self.template, self.sampling = load_template(template), sampling

    def rewrite(self, items: list[RewriteItem]) -> list[str]:
        import torch

        from .weakened_sampling import seed_batch

        prompts = [vicuna_prompt(injection_prompt(item, self.template)) for item in items]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.model.device)
        seed_batch(self.sampling.seed, items[0].id)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                do_sample=self.sampling.temperature > 0,
                temperature=self.sampling.temperature or None,
                top_p=self.sampling.top_p if self.sampling.temperature > 0 else None,
                max_new_tokens=self.sampling.max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        texts = self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        return [text.strip() for text in texts]


class EndpointRewriter:
    """An OpenAI-compatible chat endpoint, one request per item (the API key from an environment
    variable, as for the judge). Only the temperature is sent; the endpoint's own limits apply."""

    def __init__(self, url: str, model: str, template: str, temperature: float = Sampling.temperature):
        from ..benchmarks.judge import ChatJudge, JudgeConfig

        self.client = ChatJudge(JudgeConfig(url, model, temperature=temperature))
        self.template = load_template(template)

    def rewrite(self, items: list[RewriteItem]) -> list[str]:
        from ..benchmarks.judge import JudgeError

        try:
            return [self.client.ask(injection_prompt(item, self.template)).strip() for item in items]
        except JudgeError as err:
            raise RewriterError(f"rewriter endpoint: {err}") from None


class VLLMRewriter:
    """BPO's own route: the base LLM through vLLM (not installed by default: `pip install mof-llava[vllm]`)."""

    def __init__(self, model_path: str, template: str, sampling: Sampling = Sampling()):
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise RewriterError(
                "--rewriter vllm needs vLLM: pip install 'mof-llava[vllm]' (GPU machines)"
            ) from None
        self.llm = LLM(model=model_path, seed=sampling.seed)
        self.params = SamplingParams(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            stop=["</s>"],
        )
        self.template = load_template(template)

    def rewrite(self, items: list[RewriteItem]) -> list[str]:
        prompts = [vicuna_prompt(injection_prompt(item, self.template)) for item in items]
        return [out.outputs[0].text.strip() for out in self.llm.generate(prompts, self.params)]


# -- precomputed ----------------------------------------------------------------------------------
class PrecomputedRewriter:
    """Rewrites made elsewhere: a JSON array or JSONL of `{"id": ..., "rejected": "..."}` objects, one
    per record id. A record without a rewrite is an error naming its id and the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.texts: dict[str, str] = {}
        first_line: dict[str, int] = {}
        for _, _, line, raw in scan_file(self.path):
            where = f"{self.path}:{line}"
            if isinstance(raw, json.JSONDecodeError):
                raise RewriterError(f"{where}: not valid JSON ({raw.msg}, column {raw.colno})")
            if not isinstance(raw, dict) or not isinstance(raw.get("rejected"), str) or "id" not in raw:
                raise RewriterError(f'{where}: expected an object {{"id": ..., "rejected": "<text>"}}')
            key = str(raw["id"])
            if key in first_line:
                raise RewriterError(f"{where}: id {key!r} is already given at line {first_line[key]}")
            first_line[key], self.texts[key] = line, raw["rejected"]

    def rewrite(self, items: list[RewriteItem]) -> list[str]:
        missing = [item.id for item in items if item.id not in self.texts]
        if missing:
            raise RewriterError(f"{self.path}: no rewrite for record id {missing[0]!r}")
        return [self.texts[item.id] for item in items]
