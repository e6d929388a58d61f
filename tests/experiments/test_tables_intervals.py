"""`mof-llava tables` shows a one-run cell's bootstrap interval (metrics' score_ci95); cells over
several seeds keep mean ± std."""

from __future__ import annotations

from experiments_helpers import metrics, plant_run, write_metrics

from mof_llava.experiments.report import write_report


def test_one_run_cells_carry_their_interval_and_seed_cells_their_std(tmp_path):
    root = tmp_path / "runs"
    single = plant_run(root, "llava-1.5-7b_seed-1", "llava-1.5-7b", "llava-1.5-7b", 1, ("mmvp", "pope"))
    write_metrics(single, {**metrics("mmvp", 24.666), "score_ci95": [18.0, 31.3333]})
    write_metrics(single, metrics("pope", 85.9))  # no interval recorded: plain number
    for seed, score in ((1, 28.0), (2, 30.0)):
        run = plant_run(root, f"i-mof-7b_seed-{seed}", "i-mof-7b", "i-mof-7b", seed, ("mmvp",))
        write_metrics(run, {**metrics("mmvp", score, "interleave"), "score_ci95": [20.0, 36.0]})
    write_report([root], tmp_path / "tables", proxy=None)
    text = (tmp_path / "tables" / "main.md").read_text()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in text.splitlines()
        if line.startswith("| ")
    }
    assert "24.7 [18.0, 31.3]" in rows["llava-1.5-7b"] and "85.9" in rows["llava-1.5-7b"]
    assert "29.0 ± 1.4" in rows["i-mof-7b"]
    assert "bootstrap 95 % interval in brackets" in text
