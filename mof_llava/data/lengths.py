"""Token statistics of every record: length after fitting, length before, supervised tokens.

The sampler needs the real length of every sample (text tokens plus the mixer's visual tokens), and
the dataset must know before training which samples would have nothing to train on. Both come from
tokenising every record once with the real processor and template (`tokenize_record`, the same code
that builds training samples, so the numbers cannot disagree). The pass runs in parallel and is
cached next to the record index, keyed by the data file, the template, `max_length`, the length
settings (`length_budget`, `truncation`), the tag prompt (when on) and a fingerprint of the tokenizer and image-token expansion.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ..conversation import ConversationTemplate
from . import samples as samples_module
from . import tag_prompt as tag_prompt_module
from .cache import cache_file, load_cached, save_cached, source_code
from .record_file import MalformedRecordsError, RecordFile
from .records import RecordError
from .samples import (
    IMAGE_DOES_NOT_FIT,
    NO_ANSWER_FITS,
    LengthBudget,
    TextEncoder,
    Truncation,
    tokenize_record,
)
from .tag_prompt import TagPromptConfig, with_tag_prompt

STATS_VERSION = "1"
STATS_DTYPE = np.dtype(
    [
        ("length", "<i4"),  # tokens of the training sample (after fitting into max_length)
        ("full_length", "<i4"),  # tokens of the whole conversation
        ("num_supervised", "<i4"),  # tokens trained on
        ("rounds_kept", "<i4"),
        ("rounds_total", "<i4"),
        ("problem", "i1"),  # PROBLEMS index: why nothing is supervised
    ]
)
# Codes stored in the "problem" column.
PROBLEMS = {0: None, 1: IMAGE_DOES_NOT_FIT, 2: NO_ANSWER_FITS, 3: "malformed record"}
_PROBLEM_CODES = {text: code for code, text in PROBLEMS.items()}
MALFORMED = _PROBLEM_CODES["malformed record"]  # rows with no sample at all
_CHUNK = 2048


def processor_fingerprint(processor: TextEncoder) -> str:
    """Changes whenever the processor would tokenise a record differently: its tokenizer, its
    visual token count, and the code of `encode`, the templates and the sample builder (so edited code
    never reads lengths computed by the old one)."""
    tokenizer = processor.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    parts = [
        type(processor).__qualname__,
        vocab,
        str(processor.image_token_id),
        str(processor.num_image_tokens),
    ]
    parts += [repr(tokenizer.bos_token_id), repr(sorted(tokenizer.added_tokens_encoder.items()))]
    code = (type(processor).encode, samples_module, ConversationTemplate)
    parts += [source_code(obj, STATS_VERSION) for obj in code]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def token_stats(
    records: RecordFile,
    template: ConversationTemplate,
    processor: TextEncoder,
    max_length: int,
    cache_dir: str | Path | None = None,
    num_proc: int | None = None,
    strict: bool = True,
    *,
    length_budget: LengthBudget = "expanded",
    truncation: Truncation = "rounds",
    tag_prompt: TagPromptConfig | None = None,
) -> tuple[np.ndarray, list[RecordError]]:
    """One STATS_DTYPE row per record of `records` under the given length settings (see samples.py),
    cached; and the records the template rejects (raised as `MalformedRecordsError` when `strict`).
    With `tag_prompt`, every image record is measured with its tag prompt (tag_prompt.py)."""
    fitting = (max_length, length_budget, truncation)
    key = (STATS_VERSION, repr(template), *map(str, fitting), processor_fingerprint(processor))
    if tag_prompt is not None:  # caches without it keep their keys
        hint = getattr(processor, "tag_hint_token_id", None)
        key += (repr(tag_prompt), str(hint), source_code(tag_prompt_module, STATS_VERSION))
    cached_at = cache_file(cache_dir, records.path, "tokens", *key)
    stats = load_cached(cached_at)
    if stats is not None and stats.dtype == STATS_DTYPE and len(stats) == len(records):
        return stats, []
    stats, errors = _compute(records, template, processor, fitting, num_proc, tag_prompt)
    if strict and errors:
        raise MalformedRecordsError(records.path, errors)
    if not errors and not records.errors and save_cached(cached_at, stats):
        stats = load_cached(cached_at)
    return stats, errors


def _compute(records, template, processor, fitting, num_proc, tag_prompt=None):
    n = len(records)
    chunks = [(start, min(start + _CHUNK, n)) for start in range(0, n, _CHUNK)]
    num_proc = min(num_proc if num_proc is not None else (os.cpu_count() or 1), len(chunks))
    state = (records, template, processor, fitting, tag_prompt)
    if num_proc <= 1:
        _init_worker(*state)
        results = [_stats_of_range(chunk) for chunk in _progress(chunks, n)]
    else:
        # fork: the workers inherit the processor and the index instead of unpickling copies
        with ProcessPoolExecutor(
            num_proc, mp_context=get_context("fork"), initializer=_init_worker, initargs=state
        ) as pool:
            results = list(_progress(pool.map(_stats_of_range, chunks), n, total=len(chunks)))
    stats = np.concatenate([rows for rows, _ in results]) if results else np.zeros(0, STATS_DTYPE)
    errors = [err for _, errs in results for err in errs]
    return stats, errors


def _progress(iterable, n_records, total=None):
    from tqdm.auto import tqdm

    return tqdm(
        iterable, total=total, desc=f"tokenising {n_records} records", unit="chunk", disable=None, leave=False
    )


_WORKER: tuple | None = None


def _init_worker(records, template, processor, fitting, tag_prompt) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one tokenizer thread per worker process
    _WORKER = (records, template, processor, fitting, tag_prompt)


def _stats_of_range(bounds: tuple[int, int]) -> tuple[np.ndarray, list[RecordError]]:
    records, template, processor, (max_length, length_budget, truncation), tag_prompt = _WORKER
    start, end = bounds
    rows = np.zeros(end - start, dtype=STATS_DTYPE)
    errors: list[RecordError] = []
    for j, i in enumerate(range(start, end)):
        if not records.index["valid"][i]:
            rows["problem"][j] = _PROBLEM_CODES["malformed record"]
            continue
        record = records.record(i)
        location = records.location(i, record.id)
        try:
            if tag_prompt is not None:
                record = with_tag_prompt(record, tag_prompt, i, location)
            sample = tokenize_record(
                record, template, processor, max_length, location, length_budget=length_budget, truncation=truncation
            )
        except RecordError as err:
            errors.append(err)
            rows["problem"][j] = _PROBLEM_CODES["malformed record"]
            continue
        rows["length"][j], rows["full_length"][j] = len(sample.input_ids), sample.full_length
        rows["num_supervised"][j] = sample.num_supervised
        rows["rounds_kept"][j], rows["rounds_total"][j] = sample.rounds_kept, sample.rounds_total
        rows["problem"][j] = _PROBLEM_CODES[sample.problem]
    return rows, errors
