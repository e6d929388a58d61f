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
    """Counts skipped samples, each once, by kind, and keeps the first few for the report.

    A sample comes up once per epoch, and a distributed sampler that pads its shards hands some
    samples to two ranks: the tally counts samples (dataset indices), and says how many times they
    were left out in all when that differs."""

    keep: int = 20
    examples: list[SkippedSample] = field(default_factory=list)
    occurrences: int = 0  # every time a sample was left out of a batch
    kinds: dict[int, str] = field(default_factory=dict)  # dataset index -> kind, one entry per sample

    def add(self, skipped: Iterable[SkippedSample]) -> None:
        for sample in skipped:
            self.occurrences += 1
            if sample.index in self.kinds:
                continue
            self.kinds[sample.index] = sample.kind
            if len(self.examples) < self.keep:
                self.examples.append(sample)

    @classmethod
    def merged(cls, tallies: Iterable[SkipTally]) -> SkipTally:
        """One tally of several ranks' tallies: a sample that two ranks skipped counts once."""
        tallies = list(tallies)
        out = cls(keep=max((t.keep for t in tallies), default=cls.keep))
        for tally in tallies:
            out.add(tally.examples)
        for tally in tallies:
            for index, kind in tally.kinds.items():
                out.kinds.setdefault(index, kind)
        out.occurrences = sum(t.occurrences for t in tallies)
        return out

    @property
    def counts(self) -> Counter:
        """kind -> samples skipped"""
        return Counter(self.kinds.values())

    @property
    def total(self) -> int:
        return len(self.kinds)

    def summary(self) -> str:
        if not self.total:
            return "no samples skipped"
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        again = f", {self.occurrences} times in all" if self.occurrences != self.total else ""
        lines = [f"{self.total} sample(s) skipped ({kinds}){again}; first ones:"]
        lines += [f"  {s.record}: {s.reason}" for s in self.examples]
        return "\n".join(lines)
