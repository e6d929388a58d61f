"""Golden tokenisation and labels against LLaVA's reference behaviour (reference-codebases.md §1.2-§1.3),
with a real Llama-style tokenizer (SentencePiece-like BPE, byte fallback, built offline)."""

import numpy as np
import pytest
from data_helpers import turn

from mof_llava.constants import IGNORE_INDEX
from mof_llava.conversation import get_template
from mof_llava.data.records import RecordLocation, parse_record
from mof_llava.data.samples import tokenize_record

WHERE = RecordLocation("golden.json", 0, 1)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_SENTINEL = -200  # LLaVA's IMAGE_TOKEN_INDEX


def llava_tokenizer_image_token(prompt, tokenizer):
    """LLaVA's `tokenizer_image_token` (mm_utils.py), from its documented behaviour: split the prompt
    on "<image>", tokenise every chunk with the tokenizer's defaults (which prepend BOS), keep one
    BOS at the start, drop it from the chunks, and put one sentinel id between consecutive chunks."""
    bos = tokenizer.bos_token_id
    ids = [bos]
    for k, chunk in enumerate(prompt.split("<image>")):
        if k:
            ids.append(LLAVA_SENTINEL)
        chunk_ids = tokenizer(chunk).input_ids
        ids.extend(chunk_ids[1:] if chunk_ids[:1] == [bos] else chunk_ids)
    return ids


def expand_sentinels(ids, processor):
    out = []
    for i in ids:
        out.extend([processor.image_token_id] * processor.num_image_tokens if i == LLAVA_SENTINEL else [i])
    return np.asarray(out)


def supervised_runs(labels):
    """Maximal runs of consecutive supervised positions, as (start, end)."""
    mask = np.concatenate([[False], labels != IGNORE_INDEX, [False]])
    edges = np.flatnonzero(np.diff(mask.astype(int)))
    return list(zip(edges[0::2], edges[1::2]))


FINETUNE_RECORD = {
    "id": "000000033471",
    "image": "coco/train2017/000000033471.jpg",
    "conversations": [
        turn("human", "What are the colors of the bus in the image?\n<image>"),  # marker after the text
        turn("gpt", "The bus in the image is white and red."),
        turn("human", "What feature can be seen on the back of the bus?"),
        turn("gpt", "The back of the bus features an advertisement."),
        turn("human", "Is the bus driving down the street or pulled off to the side?"),
        turn("gpt", "The bus is driving down the street, which is crowded with people and other vehicles."),
    ],
}


@pytest.mark.parametrize("mixer", ["interleave", "none"])
def test_vicuna_v1_ids_and_labels_match_llava(processors, mixer):
    processor, tokenizer = processors(mixer), processors(mixer).tokenizer
    record = parse_record(FINETUNE_RECORD, WHERE)
    sample = tokenize_record(record, get_template("vicuna_v1"), processor, max_length=4096)

    # The prompt is LLaVA's string (§1.3) with the marker moved to the front of the first question (§1.2).
    q = [t["value"] for t in FINETUNE_RECORD["conversations"][0::2]]
    a = [t["value"] for t in FINETUNE_RECORD["conversations"][1::2]]
    reference = (
        f"{VICUNA_SYSTEM} USER: <image>\nWhat are the colors of the bus in the image? ASSISTANT: {a[0]}</s>"
        f"USER: {q[1]} ASSISTANT: {a[1]}</s>USER: {q[2]} ASSISTANT: {a[2]}</s>"
    )
    expected_ids = expand_sentinels(llava_tokenizer_image_token(reference, tokenizer), processor)
    assert sample.input_ids.tolist() == expected_ids.tolist()
    assert np.count_nonzero(sample.input_ids == processor.image_token_id) == processor.num_image_tokens

    # Supervised: exactly each answer and its </s>, one contiguous run per round; nothing else.
    runs = supervised_runs(sample.labels)
    assert [tokenizer.decode(sample.input_ids[s:e]) for s, e in runs] == [answer + "</s>" for answer in a]
    assert all(sample.input_ids[e - 1] == tokenizer.eos_token_id for _, e in runs)
    supervised = sample.labels != IGNORE_INDEX
    assert np.array_equal(sample.labels[supervised], sample.input_ids[supervised])
    # and what precedes each answer is the prompt up to "ASSISTANT:"
    assert [
        tokenizer.decode(sample.input_ids[max(0, s - 5) : s]).endswith("ASSISTANT:") for s, _ in runs
    ] == [True] * 3
    assert sample.problem is None and not sample.truncated


def llava_v1_labels(prompt, tokenizer, ids_len):
    """LLaVA's `preprocess_v1` masking arithmetic (train.py, §1.3) for a tokenizer where each round
    tokenises the same alone as in context: BOS masked; per round, `len(instruction) - 2` masked."""
    labels = np.zeros(ids_len, dtype=bool)
    cursor = 1
    rounds = [r for r in prompt.split("</s>") if r]
    for r in rounds:
        instruction = r.split(" ASSISTANT: ")[0] + " ASSISTANT: "
        round_len = len(llava_tokenizer_image_token(r, tokenizer))
        instruction_len = len(llava_tokenizer_image_token(instruction, tokenizer)) - 2
        labels[cursor + instruction_len : cursor + round_len] = True
        cursor += round_len
    return labels


def test_vicuna_v1_text_only_labels_equal_llava_arithmetic(processors):
    # A text-only record, where LLaVA's token counting is exact for this tokenizer: our span-based
    # labels must pick the same positions.
    processor = processors("none")
    raw = {
        "id": "sharegpt_1",
        "conversations": [
            turn("human", "Describe the image briefly."),
            turn("gpt", "The image shows a red circle."),
            turn("human", "How many circles are there?"),
            turn("gpt", "two"),
        ],
    }
    sample = tokenize_record(parse_record(raw, WHERE), get_template("vicuna_v1"), processor, 4096)
    prompt = get_template("vicuna_v1").render(parse_record(raw, WHERE).turns).text
    expected = llava_v1_labels(prompt, processor.tokenizer, len(sample.input_ids))
    assert np.array_equal(sample.labels != IGNORE_INDEX, expected)
    assert sample.input_ids.tolist() == llava_tokenizer_image_token(prompt, processor.tokenizer)


def test_plain_matches_llava_preprocess_plain(processors):
    processor = processors("interleave")
    raw = {
        "id": "004539375",
        "image": "00453/004539375.jpg",
        "conversations": [
            turn("human", "Render a clear and concise summary of the photo.\n<image>"),
            turn("gpt", "select luxury furniture 3 - inch gel memory foam mattress topper"),
        ],
    }
    sample = tokenize_record(parse_record(raw, WHERE), get_template("plain"), processor, 2048)
    caption = raw["conversations"][1]["value"]
    # The instruction is dropped: <s> <image> caption "\n" (§1.3)
    expected_ids = expand_sentinels(
        llava_tokenizer_image_token("<image>" + caption + "\n", processor.tokenizer), processor
    )
    assert sample.input_ids.tolist() == expected_ids.tolist()
    # LLaVA masks len(tokenizer_image_token("<image>")) = BOS + the image; the rest is trained on.
    masked = 1 + processor.num_image_tokens
    assert np.all(sample.labels[:masked] == IGNORE_INDEX)
    assert np.array_equal(sample.labels[masked:], sample.input_ids[masked:])
    assert processor.tokenizer.decode(sample.labels[masked:]) == caption + "\n"
    assert processor.tokenizer.eos_token_id not in sample.input_ids.tolist()  # no EOS in plain


@pytest.mark.parametrize("answer", ["\n2 dogs", "3", " leading space", "日本語 🚌", "</s> inside"])
def test_unusual_answers_are_supervised_exactly(processors, answer):
    processor = processors("none")
    raw = {"image": "x.jpg", "conversations": [turn("human", "<image>\nQ?"), turn("gpt", answer)]}
    sample = tokenize_record(parse_record(raw, WHERE), get_template("vicuna_v1"), processor, 4096)
    supervised = sample.input_ids[sample.labels != IGNORE_INDEX]
    # Supervised: " " + answer + "</s>", everything after "ASSISTANT:" as in LLaVA; decoding drops the
    # leading space (the tokenizer's word-boundary marker), as for every answer.
    assert processor.tokenizer.decode(supervised) == answer + "</s>"
    prompt_ids = sample.input_ids[sample.labels == IGNORE_INDEX]
    # The space after "ASSISTANT:" is trained on even when it is a token of its own (the answer
    # starts with a character it does not merge with, a newline or a second space).
    prompt = processor.tokenizer.decode(prompt_ids[prompt_ids != processor.image_token_id])
    assert prompt.endswith("Q? ASSISTANT:")
