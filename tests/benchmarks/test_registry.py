"""A benchmark is one module with a `BENCHMARK` entry plus its name in `registry.MODULES`: this
test module is such a module (a toy yes/no benchmark), and `mof-llava eval` offers it, its flags
and help, runs it through the generic runner path and scores and exports its answer files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from mof_llava.benchmarks import generation, registry
from mof_llava.benchmarks.registry import RUNNING, Benchmark, BenchmarkRegistryError, option
from mof_llava.benchmarks.task import EvalQuestion, EvalTask
from mof_llava.cli import main

# question, gold answer
TOY_QUESTIONS = [("is there a cat?", "yes"), ("is there a dog?", "no")]


@dataclass(frozen=True, kw_only=True)
class ToyOptions:
    data: Path = option(help="folder with toy.jsonl and its pictures")
    shout: bool = option(False, "ask the questions in capital letters", actions=RUNNING)


def _read(data: Path) -> list[dict]:
    return [json.loads(line) for line in (data / "toy.jsonl").read_text().splitlines()]


def _score(options: ToyOptions, answers: Path) -> dict:
    gold = {row["id"]: row["answer"] for row in _read(options.data)}
    given = {a["question_id"]: a["text"] for a in map(json.loads, answers.read_text().splitlines())}
    right = sum(given[i] == answer for i, answer in gold.items())
    return {"benchmark": "toy", "score": 100.0 * right / len(gold)}


def _task(options: ToyOptions, max_new_tokens: int | None) -> EvalTask:
    rows = _read(options.data)
    questions = [
        EvalQuestion(
            r["id"], r["question"].upper() if options.shout else r["question"], options.data / r["image"]
        )
        for r in rows
    ]
    return EvalTask(
        "toy",
        questions,
        "vicuna_v1",
        max_new_tokens or 4,
        {"shout": options.shout},
        {},
        lambda a: _score(options, a),
    )


def _export(answers: Path, data: Path | None, output: Path) -> None:
    output.write_text("".join(json.loads(line)["text"] + "\n" for line in answers.read_text().splitlines()))


BENCHMARK = Benchmark(
    name="toy",
    description="Toy: yes/no questions about pictures; accuracy",
    options=ToyOptions,
    score=_score,
    build_task=_task,
    export=_export,
)


@pytest.fixture
def toy(monkeypatch, tmp_path) -> Path:
    monkeypatch.setitem(registry.MODULES, "toy", __name__)  # the one list entry
    data = tmp_path / "toy"
    data.mkdir()
    rows = []
    for i, (question, answer) in enumerate(TOY_QUESTIONS, start=1):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(data / f"{i}.png")
        rows.append({"id": i, "question": question, "answer": answer, "image": f"{i}.png"})
    (data / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_a_registered_benchmark_is_offered_with_its_flags(toy, capsys):
    assert "toy Toy: yes/no questions about pictures; accuracy" in _help(["eval", "run", "--help"], capsys)
    run_help = _help(["eval", "run", "toy", "--help"], capsys)
    assert "--shout ask the questions in capital letters" in run_help
    assert "--data DATA folder with toy.jsonl" in run_help and "--max-new-tokens" in run_help
    assert "--shout" not in _help(["eval", "score", "toy", "--help"], capsys)  # a run-only option
    assert "{gqa,mmbench,toy}" in _help(["eval", "export", "--help"], capsys)


def _fake_model(monkeypatch) -> list[str]:
    """No checkpoint: a generator that says yes when a prompt mentions a CAT in capitals."""
    prompts_seen: list[str] = []

    def make_generate_fn(model, processor, max_new_tokens, image_aspect_ratio):
        def generate(images, prompts):
            prompts_seen.extend(prompts)
            return ["yes" if "CAT" in p else "no" for p in prompts]

        return generate

    monkeypatch.setattr(generation, "load_model", lambda *args: (None, None))
    monkeypatch.setattr(generation, "make_generate_fn", make_generate_fn)
    monkeypatch.setattr(generation, "model_info", lambda *args: {})
    return prompts_seen


@pytest.mark.parametrize("shout, score", [(False, 50.0), (True, 100.0)])
def test_a_registered_benchmark_runs_scores_and_exports(toy, tmp_path, monkeypatch, capsys, shout, score):
    prompts = _fake_model(monkeypatch)
    (tmp_path / "model").mkdir()
    out = tmp_path / "out"
    argv = ["eval", "run", "toy", "--model", str(tmp_path / "model"), "--data", str(toy)]
    argv += ["--output-dir", str(out), "--device", "cpu", "--no-progress", *(["--shout"] if shout else [])]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["score"] == score
    assert len(prompts) == 2 and ("IS THERE A CAT?" in prompts[0]) == shout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["score"] == score and metrics["run"]["settings"] == {"shout": shout}

    answers = out / "answers.jsonl"
    assert main(["eval", "score", "toy", "--answers", str(answers), "--data", str(toy)]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == score
    assert (
        main(["eval", "export", "toy", "--answers", str(answers), "--output", str(tmp_path / "t.txt")]) == 0
    )
    assert (tmp_path / "t.txt").read_text() == ("yes\nno\n" if shout else "no\nno\n")


def test_the_registry_names_what_it_cannot_serve(monkeypatch):
    with pytest.raises(BenchmarkRegistryError, match="unknown benchmark 'nope'"):
        registry.get("nope")
    monkeypatch.setitem(registry.MODULES, "other", __name__)  # this module's BENCHMARK is "toy"
    with pytest.raises(BenchmarkRegistryError, match="BENCHMARK must be a Benchmark named 'other'"):
        registry.get("other")


def test_every_benchmark_module_is_in_the_one_list():
    """`MODULES` is the only list of benchmarks (the CLI, the sweep specs and the verbs read it):
    every module of mof_llava/benchmarks that assigns a top-level `BENCHMARK` is in it, under the
    name its entry gives, and nothing else is."""
    import ast

    package = Path(registry.__file__).parent
    defining = set()
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = [t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets]
        if any(isinstance(t, ast.Name) and t.id == "BENCHMARK" for t in targets):
            defining.add(f"mof_llava.benchmarks.{path.stem}")
    assert defining and defining == set(registry.MODULES.values())
    assert [registry.get(name).name for name in registry.MODULES] == list(registry.MODULES)
