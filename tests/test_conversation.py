"""Template strings are LLaVA-1.5's, character for character (reference-codebases.md §1.3, benchmarks.md §0.1)."""

import pytest

from mof_llava.conversation import get_template

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def test_vicuna_v1_multi_turn_string_and_supervised_spans():
    rendered = get_template("vicuna_v1").render(
        [("<image>\nWhat are the colors of the bus?", "White and red."), ("What is on the back?", "An ad.")]
    )
    expected = (
        VICUNA_SYSTEM + " USER: <image>\nWhat are the colors of the bus? ASSISTANT: White and red.</s>"
        "USER: What is on the back? ASSISTANT: An ad.</s>"
    )
    assert rendered.text == expected
    assert [rendered.text[a:b] for a, b in rendered.supervised_spans] == [" White and red.</s>", " An ad.</s>"]


def test_vicuna_v1_generation_prompt_matches_llava_eval_prompt():
    prompt = get_template("vicuna_v1").generation_prompt("<image>\nIs there a dog?")
    assert prompt == VICUNA_SYSTEM + " USER: <image>\nIs there a dog? ASSISTANT:"


def test_llava_v1_differs_only_in_system_text():
    prompt = get_template("llava_v1").generation_prompt("Q")
    assert prompt == (
        "A chat between a curious human and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the human's questions. USER: Q ASSISTANT:"
    )


def test_plain_keeps_only_image_and_caption():
    rendered = get_template("plain").render([("Render a clear summary of the photo.\n<image>", "a red circle")])
    assert rendered.text == "<image>a red circle\n"
    assert [rendered.text[a:b] for a, b in rendered.supervised_spans] == ["a red circle\n"]


def test_plain_rejects_text_only_and_multi_turn():
    with pytest.raises(ValueError, match="needs an image"):
        get_template("plain").render([("no image here", "caption")])
    with pytest.raises(ValueError, match="exactly one"):
        get_template("plain").render([("<image>", "a"), ("q", "b")])


def test_open_turn_only_at_the_end_and_unknown_template():
    with pytest.raises(ValueError, match="only the last turn"):
        get_template("vicuna_v1").render([("q1", None), ("q2", "a2")])
    with pytest.raises(ValueError, match="unknown conversation template 'vicuna'"):
        get_template("vicuna")
