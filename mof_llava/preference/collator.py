"""`PreferenceCollator`: preference items -> one `[chosen; rejected]` batch for a single forward.

    input_ids       long [2B, L]  rows 0..B-1 the chosen conversations, B..2B-1 the rejected ones, in
                                  the same pair order, right-padded as `LlavaCollator` pads
    labels          long [2B, L]  IGNORE on prompt, visual placeholders and padding
    attention_mask  long [2B, L]
    pixel_values    [2B, 3, H, W] the pairs' images, repeated for the rejected half (BPO and trl
                                  repeat the clean image: each response is scored against it)
    reference_logps [2B]          the reference's log-probs of the rows, when the pairs carry them
                                  (reference precomputed)
    skipped, sample_records as `LlavaCollator` gives them (one record per pair)

Both halves are padded to one length so that they go through the model together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..data.collator import LlavaCollator
from ..data.skips import SkippedSample
from .dataset import HALVES


@dataclass(frozen=True)
class PreferenceCollator:
    pad_token_id: int

    def __call__(self, items: Sequence[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
        skipped = [item for item in items if isinstance(item, SkippedSample)]
        pairs = [item for item in items if not isinstance(item, SkippedSample)]
        rows = [
            {"input_ids": pair[f"{half}_input_ids"], "labels": pair[f"{half}_labels"],
             "pixel_values": pair["pixel_values"], "record": pair["record"]}
            for half in HALVES for pair in pairs
        ]  # fmt: skip
        batch = LlavaCollator(self.pad_token_id)([*rows, *skipped])
        batch["sample_records"] = [pair["record"] for pair in pairs]
        if pairs and "reference_logps" in pairs[0]:  # [pairs, (chosen, rejected)] -> the rows' order
            batch["reference_logps"] = torch.stack([pair["reference_logps"] for pair in pairs]).T.reshape(-1)
        return batch
