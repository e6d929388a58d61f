"""The lab MLLM's data: answers agree with the scenes, no round's text gives a later answer away,
and the toy MMVP has MMVP's format (pairs with one question, opposite answers, a pattern map)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mof_llava.benchmarks.mmvp import IMAGE_DIR, QUESTIONS_CSV
from mof_llava.lab import mllm, mllm_data, world
from mof_llava.prompts import SHORT_ANSWER
from mof_llava.scenes import questions

TOWERS = Path(__file__).resolve().parents[2] / "assets" / "toy-lab" / "seed0"


def _scenes(n=300):
    return [world.random_scene(np.random.default_rng([7, i])) for i in range(n)]


def test_answers_are_read_from_the_scene():
    checked = {a: 0 for a in world.ATTRIBUTES}
    for scene in _scenes():
        first = scene.main[0]
        x = sum(t.centre[0] for t in scene.main) / scene.count
        expected = {
            "colour": first.colour, "shape": first.shape, "count": ("one", "two", "three")[len(scene.main) - 1],
            "size": "big" if first.side == world.SIDES["big"] else "small", "orientation": first.orientation,
            "fill": "solid" if first.filled else "outlined", "detail": "yes" if first.dot else "no",
        }  # fmt: skip
        if scene.count == 1 and scene.companion is None and abs(x - 24) >= first.side / 2:
            expected["position"] = "left" if x < 24 else "right"
        if scene.count == 1 and scene.companion is not None and abs(x - scene.companion.centre[0]) >= 4:
            expected["relation"] = "left" if x < scene.companion.centre[0] else "right"
        for attribute in world.ATTRIBUTES:
            assert questions.value(scene, attribute) == expected.get(attribute), (attribute, scene)
            checked[attribute] += expected.get(attribute) is not None
    assert min(checked.values()) >= 20  # every question was asked of some scenes


def test_distractors_are_wrong_and_colours_absent_from_the_picture():
    rng = np.random.default_rng(0)
    for scene in _scenes(100):
        for attribute in world.ATTRIBUTES:
            right = questions.value(scene, attribute)
            if right is None:
                continue
            wrong = questions.distractor(scene, attribute, rng)
            assert wrong != right
            if attribute == "colour":
                assert wrong not in {t.colour for t in scene.things}


def test_no_round_gives_a_later_answer_away():
    for i in range(200):
        attribute, scene, rng = mllm_data.training_scene(3, "instruct", i)
        turns = questions.instruct_record("r", "x.png", scene, rng, attribute)["conversations"]
        humans = [t["value"] for t in turns[0::2]]
        assert 2 <= len(humans) <= 4 and humans[0].startswith("<image>\n")
        for k, text in enumerate(humans):
            if text.lstrip("<image>\n").startswith("What colour is"):
                assert not any(scene.main[0].colour in h for h in humans[:k]), humans
            if text.lstrip("<image>\n").startswith("What shape is"):
                assert not any(scene.main[0].shape in h for h in humans[:k]), humans


def test_every_attribute_opens_some_records():
    # Held-out and toy-MMVP questions are all asked right after the picture; a model trained only on
    # records opening with colour or shape answers a first question with a colour or a shape.
    opened = Counter()
    for i in range(300):
        attribute, scene, rng = mllm_data.training_scene(0, "instruct", i)
        first = questions.instruct_record("r", "x.png", scene, rng, attribute, 0.0)["conversations"][0]["value"]
        asks = {f"<image>\n{questions.ask(scene, a)}\n{SHORT_ANSWER}": a
                for a in world.ATTRIBUTES if questions.value(scene, a) is not None}  # fmt: skip
        opened[asks[first]] += 1
    assert set(opened) == set(world.ATTRIBUTES)
    assert opened["colour"] + opened["shape"] < 0.8 * sum(opened.values())


def test_training_pictures_cover_every_attribute_first():
    firsts = [mllm_data.training_scene(0, "instruct", i)[0] for i in range(18)]
    assert sorted(set(firsts)) == sorted(world.ATTRIBUTES)


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_toy_mmvp_has_mmvp_format(tmp_path):
    pairs = mllm_data.benchmark_pairs(0, "mmvp", 18)
    folder, patterns = tmp_path / "mmvp", tmp_path / "mmvp_patterns.csv"
    mllm_data.write_benchmark(folder, patterns, pairs, TOWERS)
    rows = _read_csv(folder / QUESTIONS_CSV)
    assert list(rows[0]) == ["Index", "Question", "Options", "Correct Answer"]
    assert [int(r["Index"]) for r in rows] == list(range(1, 37))
    assert all((folder / IMAGE_DIR / f"{i}.jpg").is_file() for i in range(1, 37))
    pattern = {int(r["Index"]): r["Pattern"] for r in _read_csv(patterns)}
    for k, (attribute, a, b, a_first) in enumerate(pairs):
        one, two = rows[2 * k], rows[2 * k + 1]
        assert one["Question"] == two["Question"] and one["Options"] == two["Options"]
        assert (one["Correct Answer"], two["Correct Answer"]) == ("(a)", "(b)")
        shown = (a, b) if a_first else (b, a)
        words = [questions.value(s, attribute).capitalize() for s in shown]
        assert one["Options"] == f"(a) {words[0]} (b) {words[1]}" and words[0] != words[1]
        assert pattern[2 * k + 1] == pattern[2 * k + 2] == attribute
    sources = _read_csv(folder / "sources.csv")  # mine export-mmvp's record, with the towers' cosines
    assert len(sources) == 36 and all(-1 <= float(s["clip_cos"]) <= 1 for s in sources)


def test_question_accuracy_per_attribute(tmp_path):
    metrics = {"benchmark": "mmvp", "per_question": {"1": {"correct": True}, "2": {"correct": False},
                                                     "3": {"correct": True}, "4": {"correct": True}}}  # fmt: skip
    (tmp_path / "m.json").write_text(json.dumps(metrics))
    (tmp_path / "p.csv").write_text("Index,Pattern\n1,colour\n2,colour\n3,count\n4,count\n")
    assert mllm.question_accuracy(tmp_path / "m.json", tmp_path / "p.csv") == {"colour": 50.0, "count": 100.0}


def test_pair_accuracy_needs_both_pictures_of_a_pair(tmp_path):
    from mof_llava.benchmarks.gqa import OFFICIAL_QUESTIONS

    # fill: pair 0 both right, pair 1 one right; detail: pair 2 both wrong -> fill 50 %, detail 0 %
    kinds = {"0000": "fill", "0001": "fill", "0002": "detail"}
    right = {"0000a": True, "0000b": True, "0001a": True, "0001b": False, "0002a": False, "0002b": False}
    gold = {q: {"types": {"semantic": kinds[q[:4]]}} for q in right}
    (tmp_path / OFFICIAL_QUESTIONS).write_text(json.dumps(gold))
    (tmp_path / "m.json").write_text(json.dumps({"per_question": right}))
    assert mllm.pair_accuracy(tmp_path / "m.json", tmp_path) == {"fill": 50.0, "detail": 0.0}


def test_cue_following_groups_answers_by_the_word_the_question_names(tmp_path):
    from mof_llava.benchmarks.gqa import OFFICIAL_QUESTIONS

    asked = {  # question id: (attribute, question, answer)
        "0000a": ("position", "Is the red circle on the left or the right?", "left"),
        "0000b": ("position", "Is the red circle on the left or the right?", " Left"),
        "0001a": ("position", "Is the red square on the left or the right?", "right"),
        "0001b": ("position", "Is the blue square on the left or the right?", "right"),
        "0002a": ("position", "Is the square on the left or the right?", "left"),  # no cue: left out
        "0002b": ("position", "Is the red or blue one on the left?", "left"),  # two cues: left out
        "0003a": ("fill", "Is the red circle solid or outlined?", "solid"),  # another attribute
    }
    gold = {q: {"question": text, "types": {"semantic": a}} for q, (a, text, _) in asked.items()}
    (tmp_path / OFFICIAL_QUESTIONS).write_text(json.dumps(gold))
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q, "text": t}) + "\n" for q, (_, _, t) in asked.items()))
    # red: left, left, right (2 follow the majority); blue: right (1) -> 3 of 4
    assert mllm.cue_following(answers, tmp_path, "position", ("red", "blue")) == (75.0, 4)
    with pytest.raises(ValueError, match="no orientation question names exactly one"):
        mllm.cue_following(answers, tmp_path, "orientation", ("red", "blue"))


def test_every_heldout_position_question_names_the_colour(tmp_path):
    """What `cue_following` needs of the lab's held-out set: a model answering from the colour word
    alone follows it on every position question."""
    pairs = mllm_data.benchmark_pairs(0, "heldout", 90)
    mllm_data.write_heldout(tmp_path, pairs)
    rule = {c: ("left", "right")[i % 2] for i, c in enumerate(world.COLOURS)}
    lines = [{"question_id": f"{k:04d}{side}", "text": rule[a.main[0].colour]}
             for k, (_, a, _, _) in enumerate(pairs) for side in "ab"]  # fmt: skip
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert mllm.cue_following(tmp_path / "answers.jsonl", tmp_path, "position", world.COLOURS) == (100.0, 20)


def test_a_sweeps_seeds_can_be_split_across_folders():
    # Seeds 0-2 as one folder or as two (0-1 and 2): the same runs, in the same table rows.
    whole = mllm.lab_variants(mllm.LabConfig(out="x", variants=("i-mof", "llava-1.5"), seeds=3))
    parts = [mllm.lab_variants(mllm.LabConfig(out="x", variants=("i-mof", "llava-1.5"), seeds=n, first_train_seed=f))
             for n, f in ((2, None), (1, 2))]  # fmt: skip
    key = lambda v: (v.name, v.row, v.train_seed)  # noqa: E731
    assert sorted(map(key, whole)) == sorted(map(key, parts[0] + parts[1]))
    assert {v.train_seed for v in parts[1]} == {2} and {v.train_seed for v in parts[0]} == {0, 1}
    assert all(v.name == f"{v.row}-seed{v.train_seed}" for v in whole)


def test_a_sweep_can_fix_the_first_weights_or_the_data_order_while_its_seeds_vary_the_other():
    def seeds(**fixed):
        runs = mllm.lab_variants(mllm.LabConfig(out="x", variants=("i-mof",), seeds=3, first_train_seed=6, **fixed))
        return [(v.name, v.row, v.train_seed, v.data_seed) for v in runs]

    assert seeds(init_seed=13) == [(f"i-mof-seed13-data{s}", "i-mof", 13, s) for s in (6, 7, 8)]
    assert seeds(data_seed=13) == [(f"i-mof-seed{s}-data13", "i-mof", s, 13) for s in (6, 7, 8)]
    assert seeds() == [(f"i-mof-seed{s}", "i-mof", s, None) for s in (6, 7, 8)]
    with pytest.raises(mllm.LabRunError, match="init_seed and data_seed are both fixed"):
        seeds(init_seed=1, data_seed=2)


def test_a_variants_data_seed_reaches_both_stages_run_configs(tmp_path):
    from mof_llava.demo.run import I_MOF, Components, with_seed, write_run_configs
    from mof_llava.toy_towers import toy_towers
    from mof_llava.training.config import load_run_config

    towers = toy_towers()
    components = Components(tmp_path, tmp_path / "llm-text", towers.clip, towers.ssl, (0.0, 0.0))
    paths = write_run_configs(tmp_path / "run", with_seed(I_MOF, 13, data_seed=6), mllm.LabConfig(out="x").settings(),
                              tmp_path / "data", components, tmp_path / "cache")  # fmt: skip
    assert [(c.train.seed, c.train.data_seed) for c in map(load_run_config, paths)] == [(13, 6), (13, 6)]


def test_a_folder_of_something_else_is_refused_in_one_line(tmp_path):
    (tmp_path / "other.txt").write_text("x")
    with pytest.raises(mllm.LabRunError, match="not empty and holds no lab_mllm.json"):
        mllm.run_lab(mllm.LabConfig(out=str(tmp_path), variants=()), say=lambda _: None)
    with pytest.raises(mllm.LabRunError, match="no clip or ssl tower there"):
        mllm.run_lab(mllm.LabConfig(out=str(tmp_path / "new"), towers=str(tmp_path)), say=lambda _: None)


def test_lab_run_command_fails_in_one_line_without_towers(tmp_path, capsys):
    from mof_llava.cli import run

    with pytest.raises(SystemExit) as exit_info:
        run(["lab", "run", "--out", str(tmp_path / "out"), "--towers", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mof-llava: error: {tmp_path}: no clip or ssl tower there (run `mof-llava lab towers`)"]


def test_lab_run_command_refuses_an_unknown_variant_in_one_line_before_any_work(tmp_path, capsys):
    from mof_llava.cli import run

    with pytest.raises(SystemExit) as exit_info:
        run(["lab", "run", "--out", str(tmp_path / "out"), "--variant", "i-mof", "--variant", "imof"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("mof-llava: error: unknown demo model 'imof': use i-mof, ")
    assert not (tmp_path / "out").exists()


def test_lab_run_command_passes_the_data_and_model_settings(tmp_path, monkeypatch):
    from mof_llava.cli import main

    seen = []
    monkeypatch.setattr(mllm, "run_lab", lambda config, say: seen.append(config) or mllm.LabResult(tmp_path))
    monkeypatch.setattr(mllm, "table", lambda runs: "")
    flags = ["--letter-share", "0.5", "--captioned-share", "0.2", "--llm-hidden-size", "96", "--seeds", "3",
             "--first-train-seed", "4", "--heldout-pairs", "90", "--data-seed", "13"]  # fmt: skip
    assert main(["lab", "run", "--out", str(tmp_path), *flags]) == 0
    (config,) = seen
    assert (config.letter_share, config.captioned_share, config.llm_hidden_size, config.seeds) == (0.5, 0.2, 96, 3)
    assert (config.first_train_seed, config.heldout_pairs, config.data_seed, config.init_seed) == (4, 90, 13, None)
    assert config.samples == mllm.LabConfig(out="x").samples  # flags not given keep LabConfig's defaults


def test_every_answer_is_one_of_the_attributes_values():
    seen = {a: set() for a in world.ATTRIBUTES}
    for scene in _scenes():
        for attribute in world.ATTRIBUTES:
            answer = questions.value(scene, attribute)
            if answer is not None:
                assert answer in questions.answer_values(attribute), (attribute, answer)
                seen[attribute].add(answer)
    # the world draws every value (6 colours, 5 shapes, 1-3 copies, 4 directions, two of the rest)
    assert {a: len(v) for a, v in seen.items()} == {
        a: len(questions.answer_values(a)) for a in world.ATTRIBUTES
    }


def _rounds(letter_share, i):
    attribute, scene, rng = mllm_data.training_scene(0, "instruct", i)
    turns = questions.instruct_record("r", "x.png", scene, rng, attribute, letter_share)["conversations"]
    return [(h["value"], g["value"]) for h, g in zip(turns[0::2], turns[1::2])]


def test_letter_share_picks_the_format_and_keeps_the_questions():
    from mof_llava.prompts import LETTER_ANSWER, SHORT_ANSWER

    for i in range(40):
        letters, shorts, half = _rounds(1.0, i), _rounds(0.0, i), _rounds(0.5, i)
        assert all(q.endswith(LETTER_ANSWER) and a in ("A", "B") for q, a in letters)
        assert all(q.endswith(SHORT_ANSWER) and a not in ("A", "B") for q, a in shorts)
        # the same questions in the same order, whatever the share
        asked = [[q.removeprefix("<image>\n").split("\n")[0] for q, _ in r] for r in (letters, shorts, half)]
        assert asked[0] == asked[1] == asked[2]
    formats = [q.endswith(LETTER_ANSWER) for i in range(200) for q, _ in _rounds(0.25, i)]
    assert 0.15 < sum(formats) / len(formats) < 0.35


def test_heldout_set_is_a_gqa_folder_scored_per_attribute(tmp_path):
    from mof_llava.benchmarks import gqa

    pairs = mllm_data.benchmark_pairs(0, "heldout", 18)
    mllm_data.write_heldout(tmp_path, pairs)
    task = gqa.build_task(gqa.resolve_paths(tmp_path))
    gold = gqa.read_official_questions(tmp_path / gqa.OFFICIAL_QUESTIONS)
    assert len(task.questions) == len(gold) == 36
    for k, (attribute, a, b, _) in enumerate(pairs):
        for side, scene in (("a", a), ("b", b)):
            question = next(q for q in task.questions if q.question_id == f"{k:04d}{side}")
            assert question.text == f"{questions.ask(a, attribute)}\n{questions.SHORT_ANSWER}"
            assert question.image_path.is_file()
            assert gold[question.question_id]["answer"] == questions.value(scene, attribute)
        assert gold[f"{k:04d}a"]["answer"] != gold[f"{k:04d}b"]["answer"]  # a pair differs in its answer
    # Every answer right but one colour answer: colour 3 of 4, every other attribute 4 of 4.
    answers = {qid: {"question_id": qid, "text": q["answer"].capitalize() + "."} for qid, q in gold.items()}
    answers["0000a"]["text"] = "purple"
    by_type = gqa.score_gqa(answers, gold)["per_semantic_type"]
    assert {a: v["accuracy"] for a, v in by_type.items()} == {a: 75.0 if a == "colour" else 100.0
                                                               for a in world.ATTRIBUTES}  # fmt: skip


def test_captioned_share_asks_colour_or_shape_alone():
    for i in range(40):
        attribute, scene, rng = mllm_data.training_scene(0, "instruct", i)
        alone = questions.instruct_record("r", "x.png", scene, rng, attribute, 0.25, 1.0)["conversations"]
        assert len(alone) == 2
        assert alone[1]["value"] in ("A", "B", scene.main[0].colour, scene.main[0].shape)
        assert alone[0]["value"].startswith(("<image>\nWhat colour is", "<image>\nWhat shape is"))
        # at share 0 the record is the one the demo has always had
        plain = questions.instruct_record(
            "r", "x.png", *mllm_data.training_scene(0, "instruct", i)[1:], attribute
        )
        zero = questions.instruct_record("r", "x.png", *mllm_data.training_scene(0, "instruct", i)[1:], attribute,
                                         0.75, 0.0)  # fmt: skip
        assert plain == zero


@pytest.mark.slow
def test_a_tiny_run_goes_through_the_whole_chain(tmp_path):
    """Data, language pre-training, both stages, the MMVP and GQA runners: too small to learn
    (tests/lab/test_lab_mllm_floor.py asserts that), but every score is where it should be."""
    config = mllm.LabConfig(out=str(tmp_path / "run"), variants=("llava-1.5",), samples=18, epochs=1.0,
                            language_steps=2, mmvp_pairs=9, heldout_pairs=9, progress=False)  # fmt: skip
    (run,) = mllm.run_lab(config, say=lambda _: None).runs
    assert set(run.heldout) == set(world.ATTRIBUTES) and all(0 <= v <= 100 for v in run.heldout.values())
    metrics = json.loads((tmp_path / "run" / run.name / "eval" / "heldout" / "metrics.json").read_text())
    assert metrics["n"] == 18  # both pictures of 9 pairs, one per attribute
    assert {k: v["n"] for k, v in metrics["per_semantic_type"].items()} == {a: 2 for a in world.ATTRIBUTES}
    assert set(run.mmvp["question_accuracy_per_attribute"]) == set(world.ATTRIBUTES)
    # pair k asks attribute k mod 9; a pair is right when both its pictures are
    both = {a: all(metrics["per_question"][f"{k:04d}{side}"] for side in "ab")
            for k, a in enumerate(world.ATTRIBUTES)}  # fmt: skip
    assert run.heldout_pair_accuracy == {a: 100.0 * ok for a, ok in both.items()}
    assert "Held-out pair accuracy" in mllm.table([run])
    assert json.loads((tmp_path / "run" / mllm.MANIFEST).read_text())["finished"][-1] == f"{run.name}/eval"
    # `mof-llava tables` reads the folder as a sweep: both evaluations in the variant's row, seed kept
    from mof_llava.experiments.results import collect

    results = collect([tmp_path / "run"]).results
    assert {(r.benchmark, r.group, r.seed) for r in results} == {("mmvp", "llava-1.5", 0), ("gqa", "llava-1.5", 0)}


@pytest.mark.parametrize("samples", [60, 1800])
def test_world_tokenizer_makes_every_answer_and_letter_one_token(tmp_path, samples):
    from mof_llava.demo.language import training_texts
    from mof_llava.demo.synthetic import dataset_paths
    from mof_llava.testing.tiny import build_tiny_tokenizer

    paths = dataset_paths(tmp_path)
    mllm_data.write_training_files(paths, 0, samples, samples, 0.25, 0.0)
    texts = training_texts(paths.pretrain_file, paths.instruct_file)
    words = {w for a in world.ATTRIBUTES for w in questions.answer_values(a)} | {"A", "B"}

    def pieces(tokenizer, word):  # the answer as the chat template puts it after "ASSISTANT:"
        return tokenizer.tokenize(f"ASSISTANT: {word}")[len(tokenizer.tokenize("ASSISTANT:")) :]

    world_tokens = build_tiny_tokenizer(mllm.TOKENIZER_VOCAB["world"], corpus=mllm.tokenizer_corpus(texts))
    assert {w: pieces(world_tokens, w) for w in words if len(pieces(world_tokens, w)) != 1} == {}
    generic = build_tiny_tokenizer(mllm.TOKENIZER_VOCAB["generic"])
    assert pieces(generic, "B") == ["▁", "B"] and pieces(generic, "A") == ["▁A"]  # why "world" exists
