"""The console entry point prints the project's own errors as one line and exits 2; anything else
(a bug) keeps its traceback."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mof_llava import cli
from mof_llava.benchmarks.mmvp import MMVPDataError


def test_project_errors_are_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MOF_LLAVA_TRACEBACK", raising=False)
    argv = ["eval", "score", "mmvp", "--answers", str(tmp_path / "a.jsonl"), "--data", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"mof-llava: error: {tmp_path / 'Questions.csv'}: MMVP Questions.csv not found\n"

    monkeypatch.setenv("MOF_LLAVA_TRACEBACK", "1")
    with pytest.raises(MMVPDataError):
        cli.run(argv)


def test_bugs_keep_their_traceback(monkeypatch):
    def broken(argv=None):
        raise KeyError("not a user error")

    monkeypatch.setattr(cli, "main", broken)
    with pytest.raises(KeyError):
        cli.run(["demo"])


def test_success_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["eval", "--help"])
    assert exit_info.value.code == 0
    assert "export" in capsys.readouterr().out


def _run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_import_is_light():
    """`import mof_llava` (what every `mof-llava` command pays first) loads neither torch nor
    transformers; the model classes come on first use."""
    result = _run_python(
        "import sys, mof_llava\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n"
        "assert mof_llava.MofLlavaConfig.model_type == 'mof_llava'\n"
        "assert 'torch' in sys.modules\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("first", ["import mof_llava", "import transformers; import mof_llava", "import mof_llava.model"])
def test_auto_classes_know_us_whatever_was_imported_first(first):
    """`import mof_llava` then transformers' Auto classes (the README's usage) works in every order:
    registration happens as soon as both are imported, without `import mof_llava` importing transformers."""
    result = _run_python(
        f"import sys\n{first}\n"
        "from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor\n"
        "config = AutoConfig.for_model('mof_llava')\n"
        "assert type(config).__name__ == 'MofLlavaConfig', type(config)\n"
        "assert AutoModelForImageTextToText._model_mapping[type(config)].__name__ == 'MofLlavaForConditionalGeneration'\n"
        "from transformers.models.auto.processing_auto import PROCESSOR_MAPPING\n"
        "assert PROCESSOR_MAPPING[type(config)].__name__ == 'MofLlavaProcessor'\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["eval", "--help"], ["mine", "embed", "--help"]])
def test_help_is_light(argv):
    result = _after_main(
        argv,
        "heavy = [m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules]\n"
        "assert not heavy, heavy\n",
    )
    assert result.returncode == 0, result.stderr


def _after_main(argv: list[str], code: str) -> subprocess.CompletedProcess:
    """`code` run in a fresh interpreter after `cli.main(argv)` (and its SystemExit)."""
    return _run_python(
        f"import sys\nfrom mof_llava import cli\ntry:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n{code}"
    )


@pytest.mark.parametrize("argv", [["--help"], ["data", "check", "--help"], ["mine", "pairs", "--help"]])
def test_help_does_not_load_the_config_validator(argv):
    """Flags are built from the options dataclasses alone; pydantic (typed_config) loads when a value
    is converted."""
    result = _after_main(
        argv,
        "assert 'pydantic' not in sys.modules and 'mof_llava.typed_config' not in sys.modules\n"
        "from mof_llava.commands.dataclass_args import _converter\n"
        "assert _converter(int)('3') == 3 and 'pydantic' in sys.modules\n",
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "setup",
    [
        "import mof_llava.model",
        "from mof_llava import MofLlavaForConditionalGeneration",
        "import transformers, mof_llava",  # transformers first: `import mof_llava` registers at once
    ],
)
def test_auto_classes_are_registered(setup):
    result = _run_python(
        f"{setup}\n"
        "from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "config_class = CONFIG_MAPPING['mof_llava']\n"
        "assert AutoModelForImageTextToText._model_mapping[config_class].__name__ == 'MofLlavaForConditionalGeneration'\n"
    )
    assert result.returncode == 0, result.stderr


def test_an_error_during_a_progress_bar_gets_its_own_line(tmp_path, capsys, monkeypatch):
    from tqdm import tqdm

    monkeypatch.delenv("MOF_LLAVA_TRACEBACK", raising=False)

    bars = []

    def fails_midway(argv=None):  # a bar updated by hand, as the runner and the embedder draw theirs
        bars.append(tqdm(total=10, desc="tokenising 10 records", mininterval=0, leave=False))
        bars[-1].update(4)
        raise MMVPDataError(f"{tmp_path / 'Questions.csv'}:5: no answer")

    monkeypatch.setattr(cli, "main", fails_midway)
    with pytest.raises(SystemExit):
        cli.run([])
    err = capsys.readouterr().err
    assert "tokenising 10 records:  40%" in err  # the bar was drawn
    # What the terminal shows between carriage returns and newlines: the error alone, last.
    shown = [part for part in re.split(r"[\r\n]", err) if part.strip()]
    assert shown[-1] == f"mof-llava: error: {tmp_path / 'Questions.csv'}:5: no answer"
