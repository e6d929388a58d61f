"""Prompt pieces shared by the benchmarks (LLaVA-1.5's evaluation conventions).

The user turn is the picture first, then the question: `"<image>\\n" + question`; the conversation
template (vicuna_v1 for LLaVA-1.5's own evaluation scripts) turns it into the model's input.
"""

from __future__ import annotations

from collections.abc import Sequence

from .constants import IMAGE_TOKEN
from .conversation import get_template

# LLaVA-1.5's answer-format instructions (LLaVA docs/Evaluation.md).
SHORT_ANSWER = "Answer the question using a single word or phrase."
LETTER_ANSWER = "Answer with the option's letter from the given choices directly."

OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def user_message(question: str) -> str:
    """The user turn of an image question: the image placeholder, a newline, then the text."""
    return f"{IMAGE_TOKEN}\n{question}"


def model_prompt(question: str, template: str = "vicuna_v1") -> str:
    """The complete text the model reads for `question`, ending where the answer starts."""
    return get_template(template).generation_prompt(user_message(question))


def lettered_options(options: Sequence[str]) -> str:
    """`A. first\\nB. second...`: the option block of LLaVA's multiple-choice prompts."""
    if len(options) > len(OPTION_LETTERS):
        raise ValueError(f"at most {len(OPTION_LETTERS)} options, got {len(options)}")
    return "\n".join(f"{OPTION_LETTERS[i]}. {opt}" for i, opt in enumerate(options))
