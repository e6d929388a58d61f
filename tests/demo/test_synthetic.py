"""The demo's procedural dataset: deterministic, valid for the data pipeline, its text true to its
pixels, and its MMVP folder loadable by the benchmark code with pairs that differ as stated."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from pixels import Seen, look

from mof_llava.benchmarks import mmvp
from mof_llava.demo.synthetic import NUMBER_WORDS, DatasetSizes, write_dataset

WORD_NUMBERS = {word: n for n, word in NUMBER_WORDS.items()} | {"a": 1}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_writes_identical_files(tmp_path):
    sizes = DatasetSizes(pretrain=12, instruct=12, mmvp_pairs=4)
    write_dataset(tmp_path / "a", seed=3, sizes=sizes)
    write_dataset(tmp_path / "b", seed=3, sizes=sizes)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_another_seed_draws_other_pictures(tmp_path):
    sizes = DatasetSizes(pretrain=12, instruct=12, mmvp_pairs=4)
    a = write_dataset(tmp_path / "a", seed=3, sizes=sizes)
    b = write_dataset(tmp_path / "b", seed=4, sizes=sizes)
    assert a.pretrain_file.read_text() != b.pretrain_file.read_text()
    assert (a.image_folder / "pretrain/000000.jpg").read_bytes() != (
        b.image_folder / "pretrain/000000.jpg"
    ).read_bytes()


def test_more_samples_keep_the_first_ones(tmp_path):
    small = write_dataset(
        tmp_path / "small", seed=3, sizes=DatasetSizes(pretrain=6, instruct=6, mmvp_pairs=2)
    )
    large = write_dataset(
        tmp_path / "large", seed=3, sizes=DatasetSizes(pretrain=20, instruct=20, mmvp_pairs=2)
    )
    assert json.loads(large.pretrain_file.read_text())[:6] == json.loads(small.pretrain_file.read_text())
    for name in ("pretrain/000000.jpg", "instruct/000005.jpg"):
        assert (large.image_folder / name).read_bytes() == (small.image_folder / name).read_bytes()


# ---------------------------------------------------------------------------------------------
# Formats


def test_records_follow_llava_formats(small_dataset):
    paths, sizes = small_dataset
    pretrain = json.loads(paths.pretrain_file.read_text())
    instruct = json.loads(paths.instruct_file.read_text())
    assert len(pretrain) == sizes.pretrain
    for record in pretrain:
        human, gpt = record["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].count("<image>") == 1 and "<image>" not in gpt["value"]
    # like the 558K file: the marker before the instruction in some records, after it in others
    assert {r["conversations"][0]["value"].startswith("<image>\n") for r in pretrain} == {True, False}
    assert {r["conversations"][0]["value"].endswith("\n<image>") for r in pretrain} == {True, False}

    with_image = [r for r in instruct if "image" in r]
    text_only = [r for r in instruct if "image" not in r]
    assert len(with_image) == sizes.instruct
    assert 0.05 <= len(text_only) / len(instruct) <= 0.10
    assert all("<image>" not in t["value"] for r in text_only for t in r["conversations"])
    assert max(len(r["conversations"]) for r in with_image) >= 6  # multi-turn
    assert len({r["id"] for r in pretrain + instruct}) == len(pretrain) + len(instruct)


def test_pictures_are_jpeg_and_png_of_varied_shapes(small_dataset):
    paths, _ = small_dataset
    files = sorted(paths.image_folder.rglob("*.*"))
    formats, ratios = set(), set()
    for path in files:
        with Image.open(path) as image:
            formats.add((path.suffix, image.format))
            ratios.add(round(image.width / image.height, 2))
    assert formats == {(".jpg", "JPEG"), (".png", "PNG")}
    assert {1.0, 2.0, 0.5} <= ratios and len(ratios) >= 5


@pytest.fixture(scope="module")
def processor(tiny_model_dirs):
    from mof_llava import MofLlavaProcessor

    return MofLlavaProcessor.from_pretrained(tiny_model_dirs("interleave"))


@pytest.mark.parametrize("which, template", [("pretrain_file", "plain"), ("instruct_file", "vicuna_v1")])
def test_every_record_trains_in_the_data_pipeline(small_dataset, processor, tmp_path, which, template):
    from mof_llava.data import LlavaDataset

    paths, _ = small_dataset
    data_file = getattr(paths, which)
    dataset = LlavaDataset(
        data_file,
        processor,
        image_folder=paths.image_folder,
        template=template,
        cache_dir=tmp_path,
        num_proc=1,
    )
    records = json.loads(data_file.read_text())
    assert len(dataset) == len(records) and len(dataset.excluded_indices) == 0
    assert dataset.num_truncated == 0
    for index in range(len(dataset)):
        item = dataset[index]
        assert (item["labels"] != -100).any()
        has_image = "image" in records[int(dataset.record_indices[index])]
        assert (item["pixel_values"] is not None) == has_image
        if has_image:
            assert tuple(item["pixel_values"].shape) == (3, 56, 56)


# ---------------------------------------------------------------------------------------------
# Text agrees with pixels

_CAPTION = re.compile(
    r"(?:a picture of |a drawing of |the image shows )?(?P<amount>a|two|three|four) (?P<colour>\w+) (?P<shape>\w+?)s?"
    r"(?: pointing (?P<orientation>up|down|left|right))?"
    r"(?: (?P<where>on the left|on the right|at the top|at the bottom|in the centre) of| on) an? [\w ]+ background"
)
_WHERE = {"on the left": "left", "on the right": "right", "at the top": "top", "at the bottom": "bottom",
          "in the centre": "centre"}  # fmt: skip


def test_captions_describe_the_pixels(small_dataset):
    paths, _ = small_dataset
    for record in json.loads(paths.pretrain_file.read_text()):
        caption = record["conversations"][1]["value"]
        match = _CAPTION.fullmatch(caption)
        assert match, caption
        seen = look(paths.image_folder / record["image"])
        where = f"{record['image']}: {caption!r} but the pixels show {seen}"
        assert seen.colour == match["colour"], where
        assert seen.count == WORD_NUMBERS[match["amount"]], where
        if match["orientation"]:
            assert set(seen.orientations) == {match["orientation"]}, where
        if match["where"]:
            assert seen.position == _WHERE[match["where"]], where


def _asked(question: str, seen: Seen) -> str | None:
    """What the pixels say the answer to `question` (its first line) is, or None when the pixels
    cannot tell (shapes, backgrounds, yes/no)."""
    if re.fullmatch(
        r"What is the colour of the \w+\?|What colour (is|are) the (?!background)\w+\?", question
    ):
        return seen.colour
    if re.fullmatch(r"How many \w+ are (there|in the picture)\?", question):
        return str(seen.count)
    if re.fullmatch(r"Which way (does|do) the \w+ point\?", question):
        assert len(set(seen.orientations)) == 1
        return seen.orientations[0]
    if re.fullmatch(
        r"Where is the \w+ in the image\?|Is the \w+ (on the left or the right|at the top or the bottom)\?",
        question,
    ):
        return seen.position
    return None


def _normalise(answer: str) -> str:
    """ "They are red." -> "red", "Three." -> "3", "On the left." -> "left" """
    text = answer.lower().rstrip(".").removeprefix("they are ")
    text = _WHERE.get(text, text)
    return str(WORD_NUMBERS[text]) if text in NUMBER_WORDS.values() else text


def test_instruction_answers_agree_with_the_pixels(small_dataset):
    paths, _ = small_dataset
    checked = {"plain": 0, "choice": 0}
    for record in json.loads(paths.instruct_file.read_text()):
        if "image" not in record:
            continue
        seen = look(paths.image_folder / record["image"])
        turns = record["conversations"]
        for question, answer in zip(turns[0::2], turns[1::2]):
            lines = question["value"].replace("<image>", "").strip().split("\n")
            truth = _asked(lines[0], seen)
            if truth is None:
                continue
            given = answer["value"]
            if len(lines) == 4 and lines[1].startswith("A. "):  # multiple choice: the letter's option
                options = {line[0]: line[3:] for line in lines[1:3]}
                given = options[given]
                checked["choice"] += 1
            else:
                checked["plain"] += 1
            assert _normalise(given) == truth, (
                f"{record['id']}: {lines[0]!r} answered {answer['value']!r}; pixels: {seen}"
            )
    assert checked["plain"] >= 40 and checked["choice"] >= 5


def test_text_only_answers_are_right(small_dataset):
    paths, _ = small_dataset
    checked = 0
    for record in json.loads(paths.instruct_file.read_text()):
        if "image" in record:
            continue
        turns = record["conversations"]
        for question, answer in zip(turns[0::2], turns[1::2]):
            q, a = question["value"], answer["value"]
            if m := re.fullmatch(r"What is (\d+) (plus|minus|times) (\d+)\?", q):
                x, op, y = int(m[1]), m[2], int(m[3])
                assert int(a.rstrip(".")) == {"plus": x + y, "minus": x - y, "times": x * y}[op], q
            elif m := re.fullmatch(r"How many letters are in the word '(\w+)'\?", q):
                assert int(a.rstrip(".")) == len(m[1])
            elif m := re.fullmatch(r"Spell the word '(\w+)' backwards\.", q):
                assert a == "".join(reversed(m[1]))
            else:
                raise AssertionError(f"unexpected text-only question {q!r}")
            checked += 1
    assert checked >= 4


# ---------------------------------------------------------------------------------------------
# MMVP folder


def test_mmvp_folder_loads_with_the_benchmark_loader(small_dataset):
    paths, sizes = small_dataset
    header = (paths.mmvp_dir / mmvp.QUESTIONS_CSV).read_text().splitlines()[0]
    assert header == "Index,Question,Options,Correct Answer"
    questions = mmvp.read_questions(paths.mmvp_dir / mmvp.QUESTIONS_CSV)
    assert [q.index for q in questions] == list(range(1, 2 * sizes.mmvp_pairs + 1))
    task = mmvp.build_task(paths.mmvp_dir)
    assert len(task.questions) == 2 * sizes.mmvp_pairs
    for question in task.questions:
        question.load_image()
    # "always (a)" must not score: the first picture of a pair is (a) in some pairs, (b) in others
    assert {q.answer for q in questions[0::2]} == {"a", "b"}


def test_mmvp_pairs_differ_in_the_asked_attribute_only(small_dataset):
    paths, _ = small_dataset
    questions = mmvp.read_questions(paths.mmvp_dir / mmvp.QUESTIONS_CSV)
    kinds = set()
    for first, second in zip(questions[0::2], questions[1::2]):
        assert (first.question, first.options) == (second.question, second.options)
        assert {first.answer, second.answer} == {"a", "b"}
        seen = [look(paths.mmvp_dir / mmvp.IMAGE_DIR / f"{q.index}.jpg") for q in (first, second)]
        for q, s in zip((first, second), seen):
            chosen = q.options["ab".index(q.answer)]
            assert _normalise(chosen) == _asked(q.question, s), (
                f"question {q.index}: {q.question} {chosen}; pixels {s}"
            )
        attribute = _attribute(first.question)
        kinds.add(attribute)
        properties = {
            "colour": lambda s: s.colour,
            "count": lambda s: s.count,
            "orientation": lambda s: set(s.orientations),
            "position": lambda s: s.position if s.count == 1 else None,
        }
        if not re.search(r"\b(triangle|arrow)s?\b", first.question):
            del properties["orientation"]  # a blob of another shape has no direction to compare
        for name, read in properties.items():
            same = read(seen[0]) == read(seen[1])
            assert same != (name == attribute), (
                f"pair {first.index}: {name} {'same' if same else 'differs'}; {seen}"
            )
    assert kinds == {"colour", "count", "orientation", "position"}


def test_pattern_map_names_the_attribute_each_pair_tests(small_dataset):
    from mof_llava.benchmarks.analysis import read_pattern_map
    from mof_llava.benchmarks.mmvp_vlm import PATTERNS

    paths, sizes = small_dataset
    patterns = read_pattern_map(paths.mmvp_patterns)
    questions = mmvp.read_questions(paths.mmvp_dir / mmvp.QUESTIONS_CSV)
    assert sorted(patterns) == [q.index for q in questions]
    expected = {"orientation": "Orientation", "count": "Quantity", "colour": "Color", "position": "Spatial"}
    for q in questions:
        assert patterns[q.index] == PATTERNS[expected[_attribute(q.question)]], q


def _attribute(question: str) -> str:
    if question.startswith("How many"):
        return "count"
    if question.startswith("Which way"):
        return "orientation"
    if question.startswith("Is the"):
        return "position"
    assert "colour" in question, question
    return "colour"
