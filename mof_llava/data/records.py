"""LLaVA's training records, validated and normalised.

A record is LLaVA's JSON object, unchanged from the 558K pretraining file and the 665K mix:

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "White and red."}, ...]}

Text-only records have no `image` key. A record with an image may carry `"tags": ["dog", "grass", ...]`,
its image's tags for LION's tag prompt (tag_prompt.py; `mof-llava tags` adds them).

`<image>` may sit anywhere in the first human turn; like
LLaVA, it is moved to the start of that turn as `"<image>\\n" + rest.strip()`. Anything else that
LLaVA would mis-train on silently is an error here, raised as `RecordError` naming the file, the
line, the record number and the record's id.

A record may carry `"task": "region"` (a name of the model's `moa.tasks`): the task LION's mixture
of adapters routes it by (collator.py); `data.task` is the task of records without one.

A region-level record (`mof-llava data rec`, rec.py) carries `"box_frame": "pad"` (or "crop"): the
input frame its answers' boxes are normalised to (boxes.py); training refuses it under another
`image_aspect_ratio`, where the model would see the object somewhere else than the answer says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..constants import IMAGE_TOKEN, TAG_HINT_TOKEN
from .boxes import INPUT_FRAMES

ROLES = ("human", "gpt")  # LLaVA's role names: user turns, then assistant turns, alternating


@dataclass(frozen=True)
class RecordLocation:
    """Where a record lives, for error messages: `file:line (record N, id '...')`."""

    path: str
    index: int  # 0-based position of the record in the file
    line: int  # 1-based line where the record starts
    record_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line} (record {self.index}"
        return where + (f", id {self.record_id!r})" if self.record_id is not None else ")")


class RecordError(ValueError):
    """A record that cannot be trained on as written. The message says where and what is wrong."""

    def __init__(self, location: RecordLocation | str, problem: str):
        self.location = location
        self.problem = problem
        super().__init__(f"{location}: {problem}")


@dataclass(frozen=True)
class Record:
    """One training conversation after validation and `<image>` normalisation."""

    id: str | None
    image: str | None  # path relative to the image folder; None for text-only records
    turns: tuple[tuple[str, str], ...]  # (human, gpt) pairs in order
    tags: tuple[str, ...] | None = None  # the image's tags (LION's tag prompt); None: the record has none
    task: str | None = None  # LION's task (e.g. 'image', 'region'): routes the LLM's mixture of adapters
    box_frame: str | None = None  # the frame a region record's boxes are in (rec.py), checked by training

    @property
    def has_image(self) -> bool:
        return self.image is not None


def parse_record(raw: Any, location: RecordLocation) -> Record:
    """Validate one decoded JSON value and return the normalised `Record`."""
    if not isinstance(raw, dict):
        raise RecordError(location, f"a record must be a JSON object, got {type(raw).__name__}")
    record_id = raw.get("id")
    if record_id is not None:
        record_id = str(record_id)
        location = RecordLocation(location.path, location.index, location.line, record_id)

    image = raw.get("image")
    if image is not None and not (isinstance(image, str) and image.strip()):
        what = "a list" if isinstance(image, list) else repr(image)
        raise RecordError(
            location, f"'image' must be one relative image path (a non-empty string), got {what}"
        )

    turns = _parse_turns(raw.get("conversations"), location)
    _check_image_markers(turns, has_image=image is not None, location=location)
    tags = _parse_tags(raw["tags"], image is not None, location) if "tags" in raw else None
    task = _parse_task(raw["task"], location) if "task" in raw else None
    box_frame = _parse_box_frame(raw["box_frame"], image is not None, location) if "box_frame" in raw else None
    if image is not None:
        human, gpt = turns[0]
        turns[0] = (move_image_marker_to_front(human), gpt)
    return Record(record_id, image, tuple(turns), tags, task=task, box_frame=box_frame)


def _parse_tags(tags: Any, has_image: bool, location: RecordLocation) -> tuple[str, ...]:
    """A list of non-empty strings describing the record's image."""
    if not has_image:
        raise RecordError(location, "'tags' describe the record's image, but the record has no 'image'")
    if not isinstance(tags, list):
        raise RecordError(location, f"'tags' must be a list of strings, got {type(tags).__name__}")
    for i, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag.strip():
            raise RecordError(location, f"tags[{i}] must be a non-empty string, got {tag!r}")
        if IMAGE_TOKEN in tag or TAG_HINT_TOKEN in tag:
            raise RecordError(location, f"tags[{i}] {tag!r} holds a marker the processor reserves")
    return tuple(tag.strip() for tag in tags)


def _parse_task(task: Any, location: RecordLocation) -> str:
    if not isinstance(task, str) or not task.strip():
        raise RecordError(location, f"'task' must be a task name (a non-empty string, e.g. 'region'), got {task!r}")
    return task.strip()


def _parse_box_frame(frame: Any, has_image: bool, location: RecordLocation) -> str:
    if not has_image:
        raise RecordError(location, "'box_frame' says where boxes sit on the record's image, but the record has no 'image'")
    if frame not in INPUT_FRAMES:
        raise RecordError(location, f"'box_frame' must be one of {', '.join(INPUT_FRAMES)}, got {frame!r}")
    return frame


def move_image_marker_to_front(text: str) -> str:
    """LLaVA's normalisation: drop `<image>` and put it back at the start, followed by a newline."""
    return (IMAGE_TOKEN + "\n" + text.replace(IMAGE_TOKEN, "").strip()).strip()


def _parse_turns(conversations: Any, location: RecordLocation) -> list[tuple[str, str]]:
    if conversations is None:
        raise RecordError(location, "missing 'conversations'")
    if not isinstance(conversations, list) or not conversations:
        raise RecordError(location, "'conversations' must be a non-empty list of {'from', 'value'} turns")
    messages = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise RecordError(location, f"turn {i} must be an object with 'from' and 'value'")
        expected = ROLES[i % 2]
        if turn["from"] != expected:
            raise RecordError(
                location,
                f"turn {i} is from {turn['from']!r} but should be from {expected!r} "
                "(turns alternate 'human', 'gpt', starting with 'human')",
            )
        if not isinstance(turn["value"], str):
            raise RecordError(
                location, f"turn {i}: 'value' must be a string, got {type(turn['value']).__name__}"
            )
        messages.append(turn["value"])
    if len(messages) % 2:
        raise RecordError(
            location, f"the last turn ({len(messages) - 1}) is from 'human' and has no 'gpt' answer"
        )
    return list(zip(messages[0::2], messages[1::2]))


def _check_image_markers(turns: list[tuple[str, str]], has_image: bool, location: RecordLocation) -> None:
    first = turns[0][0].count(IMAGE_TOKEN)
    if has_image and first != 1:
        problem = "has no" if first == 0 else f"has {first}"
        raise RecordError(
            location, f"the record has one 'image' but its first human turn {problem} {IMAGE_TOKEN}"
        )
    if not has_image and first:
        raise RecordError(
            location, f"the first human turn has {IMAGE_TOKEN} but the record has no 'image' key"
        )
    for r, (human, gpt) in enumerate(turns):
        for role, text in (("human", human), ("gpt", gpt)):
            if TAG_HINT_TOKEN in text:  # only the tag prompt writes it (tag_prompt.py)
                raise RecordError(location, f"{TAG_HINT_TOKEN} in the {role} turn of round {r}: the marker is reserved")
            if IMAGE_TOKEN in text and (r, role) != (0, "human"):
                raise RecordError(
                    location,
                    f"{IMAGE_TOKEN} in the {role} turn of round {r}: it may only appear in the first human turn",
                )
