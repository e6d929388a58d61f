"""`negatives(NegativesJob)`: BPO's rejected answers for a file of (image, prompt, ground truth)
records, written as flat preference pairs (records.py) with `neg_type` and `source`.

    from mof_llava.preference.negatives import NegativesJob, negatives
    result = negatives(NegativesJob("seeds.jsonl", "pairs.jsonl", model="runs/imof/stage2/model"))

Two kinds, asked for with `neg_types`:
- `mllm-hal`: the MLLM answers on a weakened image (weakened_sampling.py), per tower if asked;
- `llm-hal`: a rewriter injects errors into the ground truth (rewriters.py).

Input records (a JSON array or JSONL): `{"id", "image", "prompt" (one <image>), "chosen", "source"?}`,
or a LLaVA record of one round (`conversations: [human, gpt]`), whose answer is the chosen one.

Output: while it runs, every finished batch is appended (flushed, fsynced) to `<output>.part`,
one line per (record, neg_type), negatives that cannot make a pair (the same text as the chosen
answer, or empty) included with the reason; a restart reads that file, cuts a torn last line and
continues after the finished records. At the end `<output>` is written atomically in input order,
the part file is removed and `<output>.run.json` keeps the settings (a resumed run must match them)
and the counts, with the ids of every skipped negative.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..data.records import RecordError, RecordLocation
from ..options import option

NEG = frozenset({"negatives"})
NEG_TYPES = ("mllm-hal", "llm-hal")  # BPO's names: image weakening, error injection
PART_SUFFIX, RUN_SUFFIX = ".part", ".run.json"


class NegativesError(ValueError):
    """Bad input or settings of a negatives run; one line naming the file, line, record or flag."""


@dataclass(frozen=True)
class NegativesJob:
    data: str | Path  # input records
    output: str | Path  # flat preference JSONL to write
    neg_types: tuple[Literal["mllm-hal", "llm-hal"], ...] = option(
        ("mllm-hal",), "negative kind to make; repeat for both (mllm-hal needs --model, llm-hal --rewriter)",
        choices=NEG_TYPES, actions=NEG, flag="--neg-type")  # fmt: skip
    model: str | None = option(None, "MoF-LLaVA model folder that answers on weakened images", actions=NEG)
    image_folder: str | None = option(None, "root of the records' relative image paths", actions=NEG)
    template: str = option("vicuna_v1", "conversation template of the model's prompt", actions=NEG)
    batch_size: int = option(8, "records per batch", actions=NEG)
    device: str = option("auto", "cpu, cuda, cuda:N or auto", actions=NEG)
    dtype: str = option("auto", "auto, float32, bfloat16 or float16", actions=NEG)
    # image weakening (weakened_sampling.Weakening)
    corruption: Literal["noise", "blur", "mask", "crop"] = option(
        "noise", "how the image is weakened (noise: BPO's forward diffusion)", actions=NEG,
        choices=("noise", "blur", "mask", "crop"))  # fmt: skip
    noise_step: int = option(900, "diffusion step t of the noise (BPO: 900, VCD: 500)", actions=NEG)
    blur_sigma: float = option(4.0, "Gaussian blur sigma in pixels", actions=NEG)
    mask_ratio: float = option(0.5, "share of 14-pixel cells masked", actions=NEG)
    crop_scale: float = option(0.5, "side of the kept crop, as a share of the image's", actions=NEG)
    target: str = option(
        "both", "the tower whose input is weakened (both, or a tower: clip, dinov2)", actions=NEG
    )
    seed: int = option(0, "seeds each record's corruption, sampling and rewriting", actions=NEG)
    # decoding (weakened_sampling.Decoding)
    temperature: float = option(0.2, "sampling temperature of the MLLM (0: greedy; BPO: 0.2)", actions=NEG)
    top_p: float | None = option(None, "nucleus sampling of the MLLM", actions=NEG)
    max_new_tokens: int = option(1024, "longest MLLM answer in tokens", actions=NEG)
    contrast: Literal["none", "amplify_bias", "vcd"] = option(
        "none", "contrast with a second branch on the other image: amplify_bias = (1+a)*weakened - a*clean; "
        "vcd = (1+a)*clean - a*weakened (what BPO's released script runs, the hallucination-reducing direction)",
        choices=("none", "amplify_bias", "vcd"), actions=NEG)  # fmt: skip
    cd_alpha: float = option(1.0, "contrast weight a", actions=NEG)
    cd_beta: float = option(0.2, "plausibility cutoff of the contrast (0: none)", actions=NEG)
    # error injection (rewriters.py)
    rewriter: Literal["rule", "hf", "endpoint", "vllm", "precomputed"] | None = option(
        None, "how errors are injected into the ground truth", actions=NEG,
        choices=("rule", "hf", "endpoint", "vllm", "precomputed"))  # fmt: skip
    rewriter_model: str | None = option(None, "hf/vllm: LLM folder; endpoint: the model name", actions=NEG)
    rewriter_url: str | None = option(None, "endpoint: base URL (e.g. http://127.0.0.1:8000/v1)", actions=NEG)
    rewriter_file: str | None = option(None, "precomputed: JSONL of {id, rejected}", actions=NEG)
    rewrite_template: Literal["description", "qa"] = option(
        "description", "BPO's prompt: description (rewrite a description) or qa (answer for a similar image)",
        choices=("description", "qa"), actions=NEG)  # fmt: skip
    rewrite_temperature: float = option(0.8, "rewriter sampling temperature (BPO: 0.8)", actions=NEG)
    rewrite_top_p: float = option(0.95, "rewriter nucleus sampling (BPO: 0.95)", actions=NEG)
    rewrite_max_tokens: int = option(1024, "longest rewrite in tokens", actions=NEG)
    progress: bool = True  # the flag is --no-progress

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (everything but where and how fast)."""
        skip = {"output", "batch_size", "device", "progress"}
        settings = {k: v for k, v in asdict(self).items() if k not in skip}
        return json.loads(json.dumps(settings, default=str))  # as run.json holds them (lists, strings)


@dataclass(frozen=True)
class Seed:
    id: str
    image: str
    prompt: str
    chosen: str
    source: str


@dataclass
class NegativesResult:
    output: Path
    written: int = 0  # pairs in the output
    generated: int = 0  # negatives made by this call (the rest came from an interrupted run)
    skipped: dict[str, list[str]] = field(default_factory=dict)  # reason -> "id#neg_type"

    def describe(self) -> str:
        skipped = "; ".join(f"{len(ids)} {reason}" for reason, ids in self.skipped.items()) or "none"
        return f"{self.output}: {self.written} pair(s) ({self.generated} made now); skipped: {skipped}"


# -- input ----------------------------------------------------------------------------------------
def read_seeds(path: str | Path, image_root: str | Path | None = None) -> list[Seed]:
    """The records to make negatives for; the first invalid one raises one line naming file and line."""
    from ..data.preference_records import _image, _prompt, _raw_id, _text
    from ..data.record_file import scan_file

    path, seeds, seen = Path(path), [], {}
    for index, (_, _, line, raw) in enumerate(scan_file(path)):
        loc = RecordLocation(str(path), index, line, _raw_id(raw))
        if isinstance(raw, json.JSONDecodeError):
            raise NegativesError(str(RecordError(loc, f"not valid JSON ({raw.msg}, column {raw.colno})")))
        if not isinstance(raw, dict):
            raise NegativesError(
                str(RecordError(loc, f"a record must be a JSON object, got {type(raw).__name__}"))
            )
        try:
            raw = _from_llava(raw, loc) if "conversations" in raw else raw
            if loc.record_id is None:
                raise RecordError(loc, "a record needs an 'id' (it names the negatives and resumes a run)")
            if loc.record_id in seen:
                raise RecordError(loc, f"id {loc.record_id!r} is already used at line {seen[loc.record_id]}")
            seen[loc.record_id] = line
            source = _text(raw, "source", loc) if "source" in raw else path.stem
            seeds.append(Seed(loc.record_id, _image(raw, loc, image_root), _prompt(raw, loc),
                              _text(raw, "chosen", loc), source))  # fmt: skip
        except RecordError as err:
            raise NegativesError(str(err)) from None
    if not seeds:
        raise NegativesError(f"{path}: no records")
    return seeds


def _from_llava(raw: dict, loc: RecordLocation) -> dict:
    turns = raw["conversations"]
    roles = (
        [t.get("from") for t in turns]
        if isinstance(turns, list) and all(isinstance(t, dict) for t in turns)
        else None
    )
    if roles != ["human", "gpt"]:
        raise RecordError(loc, f"a LLaVA record here has one round (human, gpt), got roles {roles}")
    return {**raw, "prompt": turns[0].get("value"), "chosen": turns[1].get("value")}


# -- the run --------------------------------------------------------------------------------------
def negatives(job: NegativesJob) -> NegativesResult:
    """Make the job's negatives for every record not finished by an earlier run, then write the output."""
    from ..typed_config import check

    check(job)
    _check_job(job)
    seeds = read_seeds(job.data, job.image_folder)
    output = Path(job.output)
    part, run_file = output.with_name(output.name + PART_SUFFIX), output.with_name(output.name + RUN_SUFFIX)
    _check_resume(run_file, job, output, part)
    todo = _unfinished(job, seeds, _finished(part))
    generated = _generate(job, todo, _makers(job) if todo else {}, part, total=len(seeds))
    return _finish(job, seeds, _finished(part), output, part, run_file, generated)


def _check_job(job: NegativesJob) -> None:
    if not job.neg_types or len(set(job.neg_types)) != len(job.neg_types):
        raise NegativesError(
            f"--neg-type: give each of {', '.join(NEG_TYPES)} at most once, got {job.neg_types}"
        )
    if "mllm-hal" in job.neg_types and not job.model:
        raise NegativesError("--neg-type mllm-hal needs --model (the MLLM that answers on weakened images)")
    if "llm-hal" in job.neg_types and not job.rewriter:
        raise NegativesError("--neg-type llm-hal needs --rewriter (rule, hf, endpoint, vllm or precomputed)")
    for flag, value, ok, bounds in _bounds(job):
        if not ok:
            raise NegativesError(f"--{flag} must be {bounds}, got {value}")


def _bounds(job: NegativesJob) -> list[tuple[str, Any, bool, str]]:
    """(flag, value, within bounds, the bounds in words) for every numeric setting."""
    return [
        ("batch-size", job.batch_size, job.batch_size >= 1, "at least 1"),
        ("noise-step", job.noise_step, 0 <= job.noise_step < 1000, "in [0, 1000)"),
        ("blur-sigma", job.blur_sigma, job.blur_sigma > 0, "positive"),
        ("mask-ratio", job.mask_ratio, 0 <= job.mask_ratio <= 1, "in [0, 1]"),
        ("crop-scale", job.crop_scale, 0 < job.crop_scale <= 1, "in (0, 1]"),
        ("temperature", job.temperature, job.temperature >= 0, "0 (greedy) or positive"),
        ("top-p", job.top_p, job.top_p is None or 0 < job.top_p <= 1, "in (0, 1]"),
        ("max-new-tokens", job.max_new_tokens, job.max_new_tokens >= 1, "at least 1"),
        ("cd-beta", job.cd_beta, 0 <= job.cd_beta < 1, "in [0, 1)"),
        ("rewrite-temperature", job.rewrite_temperature, job.rewrite_temperature >= 0, "0 or positive"),
        ("rewrite-top-p", job.rewrite_top_p, 0 < job.rewrite_top_p <= 1, "in (0, 1]"),
        ("rewrite-max-tokens", job.rewrite_max_tokens, job.rewrite_max_tokens >= 1, "at least 1"),
    ]


def _check_resume(run_file: Path, job: NegativesJob, output: Path, part: Path) -> None:
    """A run's part file continues only under the same settings; a finished output is not overwritten."""
    from ..resumable import check_resume

    check_resume(output, job.settings(), NegativesError)


def _finished(part: Path) -> dict[tuple[str, str], dict[str, Any]]:
    from ..benchmarks.answers import recover_answer_file

    return {(r["id"], r["neg_type"]): r for r in recover_answer_file(part)}


def _makers(job: NegativesJob) -> dict[str, Any]:
    makers = {}
    if "mllm-hal" in job.neg_types:
        makers["mllm-hal"] = _weakened_maker(job)
    if "llm-hal" in job.neg_types:
        makers["llm-hal"] = _rewrite_maker(job)
    return {kind: makers[kind] for kind in job.neg_types}  # the output's order per record


def _weakened_maker(job: NegativesJob):
    from ..benchmarks.generation import load_model, pick_device
    from ..conversation import get_template
    from ..data.images import load_rgb_image
    from ..paths import check_model_path
    from .weakened_sampling import Decoding, WeakenedImageSampler, Weakening

    check_model_path(job.model, "--model")
    model, processor = load_model(job.model, pick_device(job.device), job.dtype)
    if job.target != "both" and job.target not in model.mixer.required_towers:
        raise NegativesError(
            f"--target {job.target!r}: the model's towers are {', '.join(model.mixer.required_towers)} (or both)"
        )
    weakening = Weakening(job.corruption, job.noise_step, job.blur_sigma, job.mask_ratio, job.crop_scale,
                          job.target, job.seed)  # fmt: skip
    decoding = Decoding(job.temperature, job.top_p, job.max_new_tokens, job.contrast, job.cd_alpha, job.cd_beta,
                        job.seed)  # fmt: skip
    sampler = WeakenedImageSampler(model, processor, weakening, decoding)
    template, root = get_template(job.template), Path(job.image_folder or ".")

    def make(seeds: list[Seed]) -> list[str]:
        images = [load_rgb_image(root / s.image) for s in seeds]
        return sampler.answer(
            [s.id for s in seeds], images, [template.generation_prompt(s.prompt) for s in seeds]
        )

    return make


def _rewrite_maker(job: NegativesJob):
    from ..constants import IMAGE_TOKEN
    from . import rewriters as rw

    sampling = rw.Sampling(job.rewrite_temperature, job.rewrite_top_p, job.rewrite_max_tokens, job.seed)
    needs = {"hf": ("rewriter_model",), "vllm": ("rewriter_model",), "precomputed": ("rewriter_file",),
             "endpoint": ("rewriter_url", "rewriter_model")}  # fmt: skip
    for name in needs.get(job.rewriter, ()):
        if not getattr(job, name):
            raise NegativesError(f"--rewriter {job.rewriter} needs --{name.replace('_', '-')}")
    rewriter = {
        "rule": lambda: rw.RuleRewriter(),
        "hf": lambda: rw.CausalLMRewriter(job.rewriter_model, job.rewrite_template, sampling, _device(job)),
        "endpoint": lambda: rw.EndpointRewriter(
            job.rewriter_url, job.rewriter_model, job.rewrite_template, job.rewrite_temperature
        ),  # fmt: skip
        "vllm": lambda: rw.VLLMRewriter(job.rewriter_model, job.rewrite_template, sampling),
        "precomputed": lambda: rw.PrecomputedRewriter(job.rewriter_file),
    }[job.rewriter]()

    def make(seeds: list[Seed]) -> list[str]:
        items = [rw.RewriteItem(s.id, s.prompt.replace(IMAGE_TOKEN, "").strip(), s.chosen) for s in seeds]
        return rewriter.rewrite(items)

    return make


def _device(job: NegativesJob) -> str:
    from ..benchmarks.generation import pick_device

    return pick_device(job.device)


def _generate(job, batches: list[list[Seed]], makers: dict, part: Path, total: int) -> int:
    """Negatives for the unfinished batches, each appended to the part file before the next. Batches
    have fixed bounds and a batch that is not complete is made again whole, so a resumed run draws
    exactly what one run would have drawn (a batch's sampling seed and padding depend on its members)."""
    from tqdm import tqdm

    from ..benchmarks.answers import AnswerWriter

    made = 0
    with AnswerWriter(part) as writer, tqdm(total=total, initial=total - sum(map(len, batches)), desc="negatives",
                                            unit=" rec", disable=not job.progress or None) as bar:  # fmt: skip
        for batch in batches:
            lines = []
            for kind, make in makers.items():
                lines += [_part_line(s, kind, text) for s, text in zip(batch, make(batch), strict=True)]
            writer.write(lines)
            made += len(lines)
            bar.update(len(batch))
    return made


def _unfinished(job: NegativesJob, seeds: list[Seed], finished) -> list[list[Seed]]:
    batches = [seeds[i : i + job.batch_size] for i in range(0, len(seeds), job.batch_size)]
    return [b for b in batches if any((s.id, kind) not in finished for s in b for kind in job.neg_types)]


def _part_line(seed: Seed, kind: str, text: str) -> dict[str, Any]:
    text = text.strip()
    reason = "empty" if not text else ("same as chosen" if text == seed.chosen.strip() else None)
    # `question_id` lets the benchmarks' crash-safe answer-file reader read and repair the part file.
    return {
        "question_id": f"{seed.id}#{kind}",
        "id": seed.id,
        "neg_type": kind,
        "rejected": text,
        "skipped": reason,
    }


def _finish(
    job, seeds, finished, output: Path, part: Path, run_file: Path, generated: int
) -> NegativesResult:
    from ..atomic import write_json_atomic
    from ..data.preference_records import PreferencePair, write_flat

    result, pairs = NegativesResult(output, generated=generated), []
    for seed in seeds:
        for kind in job.neg_types:
            line = finished[(seed.id, kind)]
            if line["skipped"]:
                result.skipped.setdefault(line["skipped"], []).append(f"{seed.id}#{kind}")
                continue
            pairs.append(PreferencePair(f"{seed.id}#{kind}", seed.image, seed.prompt, seed.chosen,
                                        line["rejected"], kind, seed.source))  # fmt: skip
    write_flat(output, pairs)
    result.written = len(pairs)
    summary = {"settings": job.settings(), "finished": True, "pairs": len(pairs), "skipped": result.skipped}
    write_json_atomic(run_file, summary, indent=1)
    part.unlink()
    return result
