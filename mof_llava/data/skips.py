"""Samples left out of training, and the tally that reports them.

Nothing is dropped silently and nothing is replaced by another sample. A sample that cannot be used
(its image is missing or corrupt under `on_bad_image="skip"`) comes out of the dataset as a
`SkippedSample`; the collator leaves it out of the batch and lists it under `batch["skipped"]`; the
training loop adds those to a `SkipTally` and reports it (and logs the running count).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SkippedSample:
    index: int  # dataset index
    record: str  # where the record is (file:line, record number, id)
    reason: str  # e.g. "image /data/coco/x.jpg: file not found"
    kind: str = "bad_image"


@dataclass
class SkipTally:
    """Counts skipped samples by kind and keeps the first few for the report."""

    keep: int = 20
    counts: Counter = field(default_factory=Counter)
    examples: list[SkippedSample] = field(default_factory=list)

    def add(self, skipped: Iterable[SkippedSample]) -> None:
        for sample in skipped:
            self.counts[sample.kind] += 1
            if len(self.examples) < self.keep:
                self.examples.append(sample)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "no samples skipped"
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        lines = [f"{self.total} sample(s) skipped ({kinds}); first ones:"]
        lines += [f"  {s.record}: {s.reason}" for s in self.examples]
        return "\n".join(lines)
