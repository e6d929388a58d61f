"""`mof-llava data check` on a preference file (BPO's native records or flat pairs): every record
validated by `read_pairs`, each problem one line `file:line (record N, id '...'): what`, and the pairs
counted by negative type and source, with the records BPO's pairing drops."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import write_text_atomic
from .preference_records import PreferenceDataError, read_pairs
from .record_file import scan_file

_EXAMPLES = 20


def is_preference_file(path: str | Path) -> bool:
    """Whether the file's first record is a preference record (`completions`, or `chosen` + `rejected`);
    False for a missing file (its check says it is missing)."""
    if not Path(path).is_file():
        return False
    for *_, raw in scan_file(Path(path)):
        return isinstance(raw, dict) and ("completions" in raw or {"chosen", "rejected"} <= raw.keys())
    return False


@dataclass
class PreferenceReport:
    data_path: str
    pairs: int = 0
    malformed: list[str] = field(default_factory=list)
    num_malformed: int = 0
    by_neg_type: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    too_long: list[str] = field(default_factory=list)  # records dropped: a response over max_words
    without_pair: list[str] = field(default_factory=list)  # records whose completions share one score
    max_words: int = 0
    images_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.num_malformed

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save_json(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_json())

    def format(self) -> str:
        lines = [f"{self.data_path}: preference data"]
        if self.num_malformed:
            lines.append(f"  invalid records: {self.num_malformed}")
            lines += [f"    {e}" for e in self.malformed]
            return "\n".join(lines)
        lines.append(f"  pairs: {self.pairs}" + ("" if self.images_checked else " (images not checked)"))
        lines.append("  by neg_type: " + ", ".join(f"{k} {v}" for k, v in self.by_neg_type.items()))
        lines.append("  by source: " + ", ".join(f"{k} {v}" for k, v in self.by_source.items()))
        lines.append(f"  dropped, a response over {self.max_words} words: {len(self.too_long)}")
        lines += [f"    {where}" for where in self.too_long[:_EXAMPLES]]
        lines.append(f"  records without a pair (all completions scored alike): {len(self.without_pair)}")
        lines += [f"    {where}" for where in self.without_pair[:_EXAMPLES]]
        return "\n".join(lines)


def check_preference(
    path: str | Path, image_folder: str | Path | None, check_images: bool
) -> PreferenceReport:
    """Validate a preference file; with `check_images`, every image must exist under `image_folder`."""
    if check_images and image_folder is None:
        raise ValueError("the data has images: pass --image-folder (or --no-images to skip the image check)")
    report = PreferenceReport(str(path), images_checked=check_images)
    try:
        result = read_pairs(path, image_folder if check_images else None)
    except PreferenceDataError as err:
        report.num_malformed = len(err.errors)
        report.malformed = [str(e) for e in err.errors[:_EXAMPLES]]
        return report
    report.pairs, report.max_words = len(result.pairs), result.max_words
    report.by_neg_type = dict(Counter(p.neg_type for p in result.pairs))
    report.by_source = dict(Counter(p.source for p in result.pairs))
    report.too_long = [str(where) for where in result.too_long]
    report.without_pair = [str(where) for where in result.without_pair]
    return report
