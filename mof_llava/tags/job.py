"""`tag(TagJob)`: a LLaVA data file with every image record's `tags` filled in by a tagger, for
LION's tag prompt (`data.tag_prompt`).

    from mof_llava.tags import TagJob, tag
    result = tag(TagJob("mix665k.json", "mix665k_tags.jsonl", tags_file="ram_tags.jsonl"))

Output: the input records in input order as JSONL, each image record with `tags` (replacing any it
had), text-only records unchanged. While it runs, every finished batch of images is appended
(flushed, fsynced) to `<output>.part`; a restart under the same settings reads it, cuts a torn last
line and continues after the finished records. At the end `<output>` is written atomically, the part
file is removed, and `<output>.run.json` keeps the settings and counts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from ..options import option
from ..resumable import check_resume, finished_lines, job_files
from .taggers import ImageRef, ImageTagger, NullTagger, PrecomputedTagger, TaggerError, read_vocabulary

TAGS = frozenset({"tags"})  # the command whose flags these options are
TAGGERS = ("precomputed", "clip", "none")


@dataclass(frozen=True)
class TagJob:
    data: str | Path  # LLaVA JSON array or JSONL file
    output: str | Path  # the tagged records (JSONL)
    tagger: Literal["precomputed", "clip", "none"] = option(
        "precomputed", "where the tags come from: a tags file made elsewhere (e.g. by RAM), CLIP zero-shot over "
        "--vocabulary, or none (empty tags)", choices=TAGGERS, actions=TAGS)  # fmt: skip
    tags_file: str | None = option(
        None, "precomputed: JSON {image: [tags]} or JSONL {image, tags} keyed by the records' image paths",
        actions=TAGS)  # fmt: skip
    image_folder: str | None = option(None, "clip: root of the records' relative image paths", actions=TAGS)
    clip_model: str | None = option(
        None, "clip: a full CLIP checkpoint (text and vision towers)", actions=TAGS
    )
    vocabulary: str | None = option(None, "clip: the candidate tags, one per line", actions=TAGS)
    top_k: int = option(5, "clip: most tags per image", actions=TAGS)
    min_probability: float = option(0.0, "clip: least softmax probability over the vocabulary", actions=TAGS)
    prompt: str = option("a photo of a {}.", "clip: the text each word is embedded in", actions=TAGS)
    batch_size: int = option(32, "images per batch", actions=TAGS)
    device: str = option("cpu", "clip: cpu, cuda or cuda:N", actions=TAGS)
    progress: bool = True  # the flag is --no-progress

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues (everything but where and how fast)."""
        skip = {"output", "batch_size", "device", "progress"}
        settings = {k: v for k, v in asdict(self).items() if k not in skip} | {"data": str(self.data)}
        if self.vocabulary:  # the words, not only the file's name
            settings["vocabulary_sha256"] = hashlib.sha256(Path(self.vocabulary).read_bytes()).hexdigest()
        return settings


@dataclass
class TagResult:
    output: Path
    records: int  # in the output
    images: int  # image records tagged
    tagged_now: int  # of those, tagged by this call (the rest came from an interrupted run)
    mean_tags: float

    def describe(self) -> str:
        resumed = self.images - self.tagged_now
        return (
            f"{self.output}: {self.records} records, {self.images} images tagged "
            f"({resumed} from an earlier run), {self.mean_tags:.1f} tags per image"
        )


def tag(job: TagJob, tagger: ImageTagger | None = None) -> TagResult:
    """Tag every image record not finished by an earlier run, then write the output. `tagger`
    replaces the job's (a plug-in such as RAM, docs/lion.md); the job's settings still key the resume."""
    from ..data.record_file import RecordFile
    from ..typed_config import check

    check(job)
    if job.batch_size < 1:
        raise TaggerError(f"--batch-size must be at least 1, got {job.batch_size}")
    records = RecordFile(job.data)  # malformed records stop here, each named
    output = Path(job.output)
    part, run_file = job_files(output)
    check_resume(output, job.settings(), TaggerError, "output")
    images = [int(i) for i in range(len(records)) if records.has_image[i]]
    done = _finished(part)
    todo = [i for i in images if str(i) not in done]
    if todo:
        _tag_batches(records, todo, tagger or make_tagger(job), job, part, total=len(images))
    return _finish(job, records, _finished(part), output, part, run_file, len(todo))


def make_tagger(job: TagJob) -> ImageTagger:
    needs = {"precomputed": ("tags_file",), "clip": ("clip_model", "vocabulary", "image_folder")}
    for name in needs.get(job.tagger, ()):
        if not getattr(job, name):
            raise TaggerError(f"--tagger {job.tagger} needs --{name.replace('_', '-')}")
    if job.tagger == "precomputed":
        return PrecomputedTagger(job.tags_file)
    if job.tagger == "clip":
        from .clip_zero_shot import CLIPZeroShotTagger

        return CLIPZeroShotTagger(
            job.clip_model, read_vocabulary(job.vocabulary), top_k=job.top_k,
            min_probability=job.min_probability, prompt=job.prompt, device=job.device,
        )  # fmt: skip
    return NullTagger()


def _finished(part: Path) -> dict[str, dict[str, Any]]:
    """Record number -> the part line of each image an earlier run finished."""
    return {r["question_id"]: r for r in finished_lines(part)}


def _tag_batches(records, todo: list[int], tagger: ImageTagger, job: TagJob, part: Path, total: int) -> None:
    from tqdm import tqdm

    from ..benchmarks.answers import AnswerWriter

    folder = Path(job.image_folder or ".")
    bar = tqdm(
        total=total, initial=total - len(todo), desc="tagging", unit=" img", disable=not job.progress or None
    )
    with AnswerWriter(part) as writer, bar:
        for start in range(0, len(todo), job.batch_size):
            batch = todo[start : start + job.batch_size]
            keys = [records.raw(i)["image"] for i in batch]
            tags = tagger.tag([ImageRef(key, folder / key) for key in keys])
            if len(tags) != len(batch):
                raise TaggerError(f"the tagger returned {len(tags)} tag lists for {len(batch)} images")
            # `question_id`: the key resumable.finished_lines reads the part file by
            writer.write(
                [{"question_id": str(i), "image": k, "tags": t} for i, k, t in zip(batch, keys, tags)]
            )
            bar.update(len(batch))


def _finish(
    job: TagJob, records, finished: dict, output: Path, part: Path, run_file: Path, now: int
) -> TagResult:
    import os

    from ..atomic import atomic_path, write_json_atomic
    from ..data.records import parse_record

    with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for i in range(len(records)):
            raw = records.raw(i)
            if records.has_image[i]:
                raw = {**raw, "tags": _tags_of(finished[str(i)], raw, part)}
                parse_record(raw, records.location(i))  # the tags as training will read them
            out.write(json.dumps(raw, ensure_ascii=False) + "\n")
        out.flush()
        os.fsync(out.fileno())
    counts = [len(row["tags"]) for row in finished.values()]
    result = TagResult(output, len(records), len(counts), now, sum(counts) / len(counts) if counts else 0.0)
    summary = {
        "settings": job.settings(),
        "finished": True,
        "records": result.records,
        "images": result.images,
    }
    write_json_atomic(run_file, summary, indent=1)
    part.unlink(missing_ok=True)
    return result


def _tags_of(line: dict[str, Any], raw: dict[str, Any], part: Path) -> list[str]:
    if line.get("image") != raw["image"]:
        raise TaggerError(
            f"{part}: record {line['question_id']} was tagged as image {line.get('image')!r}, the data now has "
            f"{raw['image']!r}; the data file changed since the run started: remove {part.name}"
        )
    return line["tags"]
