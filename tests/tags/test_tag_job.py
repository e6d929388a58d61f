"""`tag(TagJob)` and `mof-llava tags`: every image record gets its tags, text-only records pass
through, and an interrupted run resumes after its finished images (a torn last line is tagged again)."""

import json

import pytest

from mof_llava.cli import main
from mof_llava.data.record_file import RecordFile
from mof_llava.tags import PrecomputedTagger, TaggerError, TagJob, tag


def _records():
    def image(n):
        return {
            "id": f"i{n}",
            "image": f"im/{n}.jpg",
            "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A."}],
        }

    text = {
        "id": "t",
        "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}],
    }
    return [image(0), image(1), text, image(2), image(3), image(4)]


def _files(tmp_path):
    data = tmp_path / "data.json"
    data.write_text(json.dumps(_records()))
    tags = tmp_path / "ram.jsonl"
    tags.write_text(
        "".join(json.dumps({"image": f"im/{n}.jpg", "tags": [f"tag{n}", "common"]}) + "\n" for n in range(5))
    )
    return data, tags


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


class Recording:
    """A plug-in tagger that records the images it is asked about and can stop after some batches."""

    def __init__(self, inner, stop_after=None):
        self.inner, self.stop_after, self.seen, self.calls = inner, stop_after, [], 0

    def tag(self, images):
        if self.stop_after is not None and self.calls == self.stop_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.seen += [ref.key for ref in images]
        return self.inner.tag(images)


def test_every_image_record_gets_its_tags_in_input_order(tmp_path):
    data, tags = _files(tmp_path)
    result = tag(TagJob(data, tmp_path / "out.jsonl", tags_file=str(tags), batch_size=2, progress=False))
    out = _read(tmp_path / "out.jsonl")
    assert [r["id"] for r in out] == ["i0", "i1", "t", "i2", "i3", "i4"]
    assert [r.get("tags") for r in out] == [
        ["tag0", "common"],
        ["tag1", "common"],
        None,
        ["tag2", "common"],
        ["tag3", "common"],
        ["tag4", "common"],
    ]
    assert out[2] == _records()[2] and {k: v for k, v in out[0].items() if k != "tags"} == _records()[0]
    assert (result.records, result.images, result.tagged_now, result.mean_tags) == (6, 5, 5, 2.0)
    records = RecordFile(tmp_path / "out.jsonl")  # the output reads as training data, tags included
    assert records.record(3).tags == ("tag2", "common")
    assert not (tmp_path / "out.jsonl.part").exists()
    assert json.loads((tmp_path / "out.jsonl.run.json").read_text())["finished"] is True


def test_an_interrupted_run_resumes_after_its_finished_images(tmp_path):
    data, tags = _files(tmp_path)
    job = TagJob(data, tmp_path / "out.jsonl", tags_file=str(tags), batch_size=2, progress=False)
    first = Recording(PrecomputedTagger(tags), stop_after=1)
    with pytest.raises(KeyboardInterrupt):
        tag(job, tagger=first)
    assert first.seen == ["im/0.jpg", "im/1.jpg"] and not (tmp_path / "out.jsonl").exists()
    part = tmp_path / "out.jsonl.part"
    with open(part, "a") as handle:  # a crash in the middle of writing the next batch's first line
        handle.write('{"question_id": "3", "image": "im/2.jpg", "ta')
    second = Recording(PrecomputedTagger(tags))
    result = tag(job, tagger=second)
    assert second.seen == ["im/2.jpg", "im/3.jpg", "im/4.jpg"]  # the torn line's image again, the rest once
    assert result.tagged_now == 3 and result.images == 5
    straight = tmp_path / "straight.jsonl"
    tag(TagJob(data, straight, tags_file=str(tags), batch_size=3, progress=False))
    assert (tmp_path / "out.jsonl").read_text() == straight.read_text()


def test_resume_refuses_other_settings_and_a_finished_output(tmp_path):
    data, tags = _files(tmp_path)
    job = TagJob(data, tmp_path / "out.jsonl", tags_file=str(tags), batch_size=2, progress=False)
    with pytest.raises(KeyboardInterrupt):
        tag(job, tagger=Recording(PrecomputedTagger(tags), stop_after=1))
    with pytest.raises(
        TaggerError, match=r"out.jsonl.part was made with other settings \(tagger, tags_file\)"
    ):
        tag(TagJob(data, tmp_path / "out.jsonl", tagger="none", progress=False))
    tag(job)
    with pytest.raises(TaggerError, match="out.jsonl exists; remove it"):
        tag(job)


def test_the_tagger_needs_its_inputs(tmp_path):
    data, _ = _files(tmp_path)
    with pytest.raises(TaggerError, match="--tagger precomputed needs --tags-file"):
        tag(TagJob(data, tmp_path / "a.jsonl", progress=False))
    with pytest.raises(TaggerError, match="--tagger clip needs --clip-model"):
        tag(TagJob(data, tmp_path / "b.jsonl", tagger="clip", progress=False))


def test_the_command_tags_and_resumes(tmp_path, capsys):
    data, tags = _files(tmp_path)
    out = tmp_path / "out.jsonl"
    argv = ["tags", str(data), "-o", str(out), "--tags-file", str(tags), "--batch-size", "2", "--no-progress"]
    with pytest.raises(KeyboardInterrupt):
        tag(
            TagJob(data, out, tags_file=str(tags), batch_size=2, progress=False),
            tagger=Recording(PrecomputedTagger(tags), stop_after=2),
        )
    assert main(argv) == 0
    assert "6 records, 5 images tagged (4 from an earlier run)" in capsys.readouterr().out
    assert RecordFile(out).record(5).tags == ("tag4", "common")
    none = tmp_path / "none.jsonl"
    assert main(["tags", str(data), "-o", str(none), "--tagger", "none", "--no-progress"]) == 0
    assert [r.get("tags") for r in _read(none)] == [[], [], None, [], [], []]
