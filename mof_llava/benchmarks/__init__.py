"""Benchmarks: MMVP, MMVP-VLM, POPE, MMBench and GQA.

One module per benchmark (files, prompts, scoring exactly as its reference defines it) and the
shared pieces: `answers` (LLaVA's answer-file format, crash-safe writing, merging), `prompts`,
`task` (what the runner needs from a benchmark), `registry` (the list of benchmarks, each
module's `BENCHMARK` entry: options, task, scorer), `runner` (batched, sharded, resumable
generation), `generation` (a mof-llava checkpoint as a batch answerer), `judge` (optional LLM
judge), `analysis` and `plots` (per-pattern analysis), `provenance`, `synthetic` (small folders
in the real formats), and `evaluate` (the library verbs: `evaluate(EvalConfig)`, `score`, `merge`,
`export`). The command line is `mof-llava eval` (mof_llava/commands/eval.py), a skin over those
verbs; the user guide is docs/evaluation.md.
"""

from .registry import MODULES as _MODULES

BENCHMARKS = tuple(_MODULES)  # the registered names, in `mof-llava eval --help` order
