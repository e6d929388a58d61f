"""Preference data and objectives (BPO, arXiv 2403.08730): pairs from BPO's scored records or a flat
JSONL, image weakening that can target one vision tower alone, and the DPO losses as pure functions.
The training stage that uses them is not here yet (docs/preference.md)."""
