"""Tables of `measure` results over seeds: mean and spread (half the range) per attribute."""

from __future__ import annotations

import statistics

from . import world

LABELS = {"clip": "CLIP", "ssl": "SSL"}


def _cell(values: list[float], percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    mean = statistics.fmean(values) * scale
    spread = (max(values) - min(values)) / 2 * scale
    return f"{mean:.0f} ± {spread:.0f}" if percent else f"{mean:.2f} ± {spread:.2f}"


def table(results: list[dict], kind: str, feature: str) -> str:
    """Markdown: one row per attribute, CLIP and SSL columns (kind "distance" or "probe")."""
    percent = kind == "probe"
    head = "| attribute | captioned | " + " | ".join(LABELS[t] for t in LABELS)
    head += " | chance |" if percent else " |"
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for attribute in world.ATTRIBUTES:
        cells = [_cell([r[t][kind][feature][attribute] for r in results], percent) for t in LABELS]
        row = f"| {attribute} | {'yes' if attribute in world.CAPTIONED else 'no'} | " + " | ".join(cells)
        if percent:
            row += f" | {_cell([r['chance'][attribute] for r in results], True)}"
        rows.append(row + " |")
    return "\n".join(rows)


def report(results: list[dict]) -> str:
    parts = []
    for feature, what in (("tokens", "patch tokens, flattened"), ("mean", "patch tokens, mean-pooled"),
                          ("global", "global embedding")):  # fmt: skip
        parts.append(f"### Relative pair distance, {what}\n\n{table(results, 'distance', feature)}")
        parts.append(f"### Linear-probe accuracy (%), {what}\n\n{table(results, 'probe', feature)}")
    if all("reader" in r[t]["probe"] for r in results for t in LABELS):  # measured with reader_steps > 0
        parts.append(f"### Attentive-reader accuracy (%), patch tokens\n\n{table(results, 'probe', 'reader')}")
    return "\n\n".join(parts) + "\n"
