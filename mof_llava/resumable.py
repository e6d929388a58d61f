"""Jobs that resume through a part file: each finished batch is appended (flushed, fsynced) to
`<output>.part`, the settings sit in `<output>.run.json`, and `<output>` is written atomically at the
end. A restart under the same settings continues after the finished lines; other settings, or an
output that is already finished, are refused. Used by `preference.negatives` and `tags.tag`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PART_SUFFIX, RUN_SUFFIX = ".part", ".run.json"


def job_files(output: Path) -> tuple[Path, Path]:
    """(part file, run file) of `output`."""
    return output.with_name(output.name + PART_SUFFIX), output.with_name(output.name + RUN_SUFFIX)


def check_resume(
    output: Path, settings: dict[str, Any], error: type[Exception], what: str = "--output"
) -> None:
    """Refuse a finished `output` and a part file made with other `settings`; then record `settings`."""
    from .atomic import write_json_atomic

    part, run_file = job_files(output)
    if output.exists() and not part.exists():
        raise error(f"{output} exists; remove it (and {run_file.name}) or choose another {what}")
    if part.exists() and run_file.is_file():
        before = json.loads(run_file.read_text())["settings"]
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            raise error(
                f"{part} was made with other settings ({', '.join(changed)}); use them, or remove {part.name}"
            )
    write_json_atomic(run_file, {"settings": settings, "finished": False}, indent=1)


def finished_lines(part: Path) -> list[dict[str, Any]]:
    """The complete lines of a part file; a torn last line (an interrupted write) is cut off. Lines
    carry a `question_id`, so the benchmarks' crash-safe answer-file reader reads and repairs them."""
    from .benchmarks.answers import recover_answer_file

    return recover_answer_file(part)
