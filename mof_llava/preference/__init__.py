"""Preference data and objectives (BPO, arXiv 2403.08730): pairs from BPO's scored records or a flat
JSONL, image weakening that can target one vision tower alone, the negatives made from them (the MLLM
on weakened images, rewriters injecting errors), and the DPO losses as pure functions (docs/preference.md)."""
