"""A run prints its own lines; the libraries' chatter (transformers' loading and saving bars and
warnings, DeepSpeed's accelerator notice) only with `mof-llava -v` / MOF_LLAVA_VERBOSE=1. Log lines
never land on a progress bar's line."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys

import pytest
from tqdm import tqdm

from mof_llava import cli
from mof_llava.verbosity import VERBOSE_ENV, setup_logging

OUTPUT_ENV = ("MOF_LLAVA_VERBOSE", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")


def _python(code: str, verbose: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in OUTPUT_ENV}
    if verbose:
        env[VERBOSE_ENV] = "1"
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        env=env | {"OMP_NUM_THREADS": "1"},
    )


# What a run does first (cli.main), then what loading and saving a checkpoint prints.
SAVE_AND_LOAD = """
from mof_llava.verbosity import configure_output
configure_output(False)
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel
config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
LlamaModel(config).save_pretrained("{folder}")
LlamaForCausalLM.from_pretrained("{folder}")  # no lm_head in the file: transformers reports it
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_transformers_bars_and_load_report_only_when_verbose(tmp_path, verbose):
    result = _python(SAVE_AND_LOAD.format(folder=tmp_path / "llm"), verbose)
    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    for noise in ("Writing model shards", "Loading weights", "lm_head"):
        assert (noise in printed) == verbose, (noise, printed[-2000:])


@pytest.mark.parametrize("verbose", [False, True])
def test_deepspeed_accelerator_notice_only_when_verbose(verbose):
    result = _python(
        "from mof_llava.verbosity import configure_output\n"
        "configure_output(False)\n"
        "from deepspeed.accelerator import get_accelerator\n"
        "print(get_accelerator().device_name())\n",
        verbose,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "cpu"
    assert ("Setting accelerator to CPU" in result.stdout) == verbose


def test_the_verbose_flag_reaches_the_processes_a_run_starts(tmp_path, monkeypatch):
    for key in OUTPUT_ENV:
        monkeypatch.delenv(key, raising=False)
    argv = ["eval", "score", "mmvp", "--answers", str(tmp_path / "a.jsonl"), "--data", str(tmp_path)]
    with pytest.raises(Exception, match="Questions.csv not found"):
        cli.main(argv)
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error" and VERBOSE_ENV not in os.environ
    with pytest.raises(Exception, match="Questions.csv not found"):
        cli.main(["-v", *argv])
    assert os.environ[VERBOSE_ENV] == "1" and os.environ["TRANSFORMERS_VERBOSITY"] == "warning"


def test_a_user_setting_is_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    with pytest.raises(Exception, match="Questions.csv not found"):
        cli.main(["eval", "score", "mmvp", "--answers", str(tmp_path / "a"), "--data", str(tmp_path)])
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"


def test_a_log_line_clears_the_progress_bar_line_first():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(logging.INFO, "%(message)s", force=True)
        root.handlers[0].setStream(stream)
        bar = tqdm(total=10, desc="stage 2", file=stream, mininterval=0)
        bar.update(3)
        logging.getLogger("mof_llava.data").warning("image a.jpg: file not found (record 7)")
        bar.update(3)
        bar.close()
    finally:
        root.handlers[:], root.level = saved
    # Every line the terminal shows, between carriage returns and newlines: the message is one of
    # them on its own, not the tail of "stage 2:  30%|###  | 3/10 ...".
    shown = re.split(r"[\r\n]", stream.getvalue())
    assert "image a.jpg: file not found (record 7)" in shown
    assert any(line.startswith("stage 2:  60%") for line in shown)  # and the bar comes back
