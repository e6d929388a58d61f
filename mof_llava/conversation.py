"""Conversation templates: how a list of (user, assistant) turns becomes the text the LLM reads.

The strings are LLaVA-1.5's, character for character, so models trained here compare fairly with
LLaVA's and LLaVA's checkpoints evaluate correctly here:

- `plain` (stage 1, feature alignment): the user turn is dropped and only the picture and the
  caption remain: `<image>{caption}\\n`.
- `vicuna_v1` (stage 2 and evaluation): `{system} USER: {q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: ...`
- `llava_v1`: `vicuna_v1` with "human" instead of "user" in the system prompt (the MMVP repo's
  default for its official evaluation script).

Rendering also returns the character spans of every assistant answer (with the space before it and
its closing separator: what the model writes after `ASSISTANT:`), which is what the data pipeline
supervises; labels are then derived from token offsets, so there is no token-count bookkeeping that
can drift out of sync with the tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .constants import IMAGE_TOKEN

_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


@dataclass(frozen=True)
class RenderedConversation:
    text: str
    # [start, end) character ranges of `text` the model is trained to produce
    supervised_spans: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ConversationTemplate:
    name: str
    system: str
    roles: tuple[str, str]  # (user, assistant)
    sep: str  # closes the system prompt and each user turn
    sep2: str  # closes each assistant turn
    plain: bool = False  # caption-only format of stage 1

    def render(self, turns: Sequence[tuple[str, str | None]]) -> RenderedConversation:
        """Render (user, assistant) turns; an assistant message of None leaves the prompt open for
        generation (only allowed on the last turn)."""
        if not turns:
            raise ValueError("a conversation needs at least one turn")
        for i, (_, answer) in enumerate(turns[:-1]):
            if answer is None:
                raise ValueError(f"turn {i}: only the last turn may leave the assistant answer open")
        return self._render_plain(turns) if self.plain else self._render_chat(turns)

    def generation_prompt(self, user_message: str) -> str:
        """The text that asks the model to answer `user_message`."""
        return self.render([(user_message, None)]).text

    def _render_chat(self, turns: Sequence[tuple[str, str | None]]) -> RenderedConversation:
        user, assistant = self.roles
        parts = [self.system + self.sep]
        spans = []
        for question, answer in turns:
            parts.append(f"{user}: {question}{self.sep}")
            if answer is None:
                parts.append(f"{assistant}:")
                continue
            parts.append(f"{assistant}:")
            # Supervised: what the model writes after the generation prompt, the space before the
            # answer included. LLaVA trains on every token after "ASSISTANT:", so a Llama tokenizer's
            # bare "▁" before a digit or a newline is trained on too.
            start = sum(map(len, parts))
            parts.append(" " + answer + self.sep2)
            spans.append((start, start + 1 + len(answer) + len(self.sep2)))
        return RenderedConversation("".join(parts), tuple(spans))

    def _render_plain(self, turns: Sequence[tuple[str, str | None]]) -> RenderedConversation:
        # Stage 1 keeps only the picture: the instruction text is replaced by the image marker.
        if len(turns) != 1:
            raise ValueError(f"the plain template takes exactly one (image, caption) turn, got {len(turns)}")
        question, caption = turns[0]
        if IMAGE_TOKEN not in question:
            raise ValueError(f"the plain template needs an image: the user turn has no {IMAGE_TOKEN}")
        if caption is None:
            return RenderedConversation(IMAGE_TOKEN, ())
        text = IMAGE_TOKEN + caption + self.sep
        return RenderedConversation(text, ((len(IMAGE_TOKEN), len(text)),))


TEMPLATES: dict[str, ConversationTemplate] = {
    "plain": ConversationTemplate("plain", system="", roles=("", ""), sep="\n", sep2="\n", plain=True),
    "vicuna_v1": ConversationTemplate("vicuna_v1", _VICUNA_SYSTEM, ("USER", "ASSISTANT"), sep=" ", sep2="</s>"),
    "llava_v1": ConversationTemplate("llava_v1", _LLAVA_SYSTEM, ("USER", "ASSISTANT"), sep=" ", sep2="</s>"),
}


def get_template(name: str) -> ConversationTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; choose one of {sorted(TEMPLATES)}") from None
