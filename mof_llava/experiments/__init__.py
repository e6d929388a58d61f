"""Experiments: the paper's runs as sweeps, their job scripts and status, and the tables and figures.

    sweep YAML --spec--> SweepSpec --expand--> PlannedRun (resolved stage-1/stage-2 configs, steps)
               --plan--> run folders: stage1.yaml, stage2.yaml, experiment.json, jobs/ (bash)
    job scripts --train/train.py, eval/run.py--> stage1/adapters, stage2/model, eval/<bench>/metrics.json
    run folders --status--> pending / queued / running / done / failed / cancelled per step (read from disk)
    metrics.json files --results--> Result --tables--> Markdown, LaTeX, CSV; --figures--> PNG

Modules: `spec` (reading a sweep file), `layout` (where everything lives inside a run folder: the
one place that names paths), `expand` (a sweep into runs and their resolved configs), `scripts`
(job scripts from the templates in scripts/launch/), `status`, `results` (metrics files into
comparable results), `tables`, `render` (Markdown / LaTeX / CSV), `figures`, `reported` (numbers
published by others, kept apart from ours), `api` (plan / launch / status / tables as one call
each, with typed options). The commands are `mof-llava sweep` and
`mof-llava tables`; the user guide is docs/experiments.md, the whole path docs/reproduce.md.
"""
