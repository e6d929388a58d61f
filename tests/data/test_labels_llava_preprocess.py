"""Token ids and supervised positions equal LLaVA's `preprocess_v1` / `preprocess_plain`, token for token,
with a real 32K Llama-style SentencePiece tokenizer (tests/fixtures/tokenizers/).

The reference is written here from LLaVA's documented behaviour (reference-codebases.md §1.2-§1.3) on
LLaVA-1.5's stack: the slow (SentencePiece) `LlamaTokenizer` with `legacy=False`, as LLaVA loads
Vicuna-1.5 (`use_fast=False`), and the tokenizers >= 0.14 round-length correction. Nothing of ours is
used to build the expected values: the slow tokenizer is re-implemented on the `sentencepiece`
library, the prompt strings are assembled from LLaVA's separator rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sentencepiece
from data_helpers import turn
from sentencepiece import sentencepiece_model_pb2

from mof_llava.constants import IGNORE_INDEX
from mof_llava.conversation import get_template
from mof_llava.data.check import paper_processor
from mof_llava.data.records import RecordLocation, parse_record
from mof_llava.data.samples import tokenize_record

SP_FOLDER = Path(__file__).parents[1] / "fixtures" / "tokenizers" / "llama-sentencepiece-32k"
SENTINEL = -200  # LLaVA's IMAGE_TOKEN_INDEX
SPIECE = "\u2581"
SYSTEMS = {
    "vicuna_v1": "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "llava_v1": "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
}


class SlowLlamaTokenizer:
    """transformers 4.3x's slow `LlamaTokenizer(legacy=False)`: special tokens split out first; the
    text gets one `▁` in front; a piece starting with `▁` is encoded behind `<unk>` (then dropped) so
    SentencePiece adds no second prefix; other pieces (the text after `</s>`) get no prefix at all,
    the SentencePiece model being loaded with add_dummy_prefix off. BOS in front, no EOS."""

    SPECIALS = ("<unk>", "<s>", "</s>")

    def __init__(self, model_file: Path):
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(model_file.read_bytes())
        proto.normalizer_spec.add_dummy_prefix = False
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=proto.SerializeToString())
        self.unk_length = len(self.sp.encode("<unk>", out_type=str))
        self.bos = self.sp.bos_id()
        self.legacy = False

    def __call__(self, text: str) -> list[int]:
        return [self.bos] + [self.sp.piece_to_id(p) for p in self.tokenize(text)]

    def tokenize(self, text: str) -> list[str]:
        if not text:
            return []
        pieces = []
        for part in re.split("(<unk>|<s>|</s>)", SPIECE + text.replace(SPIECE, " ")):
            if part in self.SPECIALS:
                pieces.append(part)
            elif part:
                pieces += self._tokenize(part)
        if len(pieces) > 1 and pieces[0] == SPIECE and pieces[1] in self.SPECIALS:
            pieces = pieces[1:]
        return pieces

    def _tokenize(self, text: str) -> list[str]:
        if not text.startswith((SPIECE, " ")):
            return self.sp.encode(text, out_type=str)
        return self.sp.encode("<unk>" + text, out_type=str)[self.unk_length :]


def tokenizer_image_token(prompt: str, tokenizer: SlowLlamaTokenizer) -> list[int]:
    """LLaVA's mm_utils.tokenizer_image_token: chunks around "<image>" tokenised alone, one BOS, one
    sentinel per image."""
    ids = [tokenizer.bos]
    for k, chunk in enumerate(prompt.split("<image>")):
        if k:
            ids.append(SENTINEL)
        ids += tokenizer(chunk)[1:]
    return ids


def llava_v1_prompt(system: str, rounds, has_image: bool) -> str:
    """SeparatorStyle.TWO: system + sep, then "ROLE: message" + sep / sep2; LLaVA's
    preprocess_multimodal has put "<image>\\n" in front of the first question."""
    text = system + " "
    for k, (question, answer) in enumerate(rounds):
        question = "<image>\n" + question if has_image and k == 0 else question
        text += f"USER: {question} ASSISTANT: {answer}</s>"
    return text


def preprocess_v1(prompt: str, tokenizer: SlowLlamaTokenizer, has_image: bool):
    """LLaVA's preprocess_v1 masking: rounds split on sep2, each round's instruction part masked with
    len(tok(instruction)) - 2 tokens, round length len(tok(round)), both one less for rounds after the
    first with a non-legacy tokenizer (tokenizers >= 0.14). Returns (ids, labels, mismatch)."""
    encode = (lambda t: tokenizer_image_token(t, tokenizer)) if has_image else tokenizer
    ids = encode(prompt)
    labels = list(ids)
    cur = 1
    labels[:cur] = [IGNORE_INDEX] * cur
    sep = " ASSISTANT: "
    for i, rou in enumerate(prompt.split("</s>")):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        round_len, instruction_len = len(encode(rou)), len(encode(parts[0] + sep)) - 2
        if i != 0 and not tokenizer.legacy:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        end = min(cur + instruction_len, len(labels))
        labels[cur:end] = [IGNORE_INDEX] * (end - cur)
        cur += round_len
    labels[cur:] = [IGNORE_INDEX] * len(labels[cur:])
    return ids, labels, cur != len(ids)


def preprocess_plain(caption: str, tokenizer: SlowLlamaTokenizer):
    """LLaVA's preprocess_plain: "<image>" + caption + "\\n"; the first len(tokenizer_image_token("<image>"))
    positions (BOS and the image) masked."""
    ids = tokenizer_image_token("<image>" + caption + "\n", tokenizer)
    masked = len(tokenizer_image_token("<image>", tokenizer))
    return ids, [IGNORE_INDEX] * masked + ids[masked:]


def expand_image(ids, labels, processor):
    """LLaVA's model puts the image features (all IGNORE in the labels) where the sentinel is."""
    out_ids, out_labels = [], []
    for token, label in zip(ids, labels):
        n = processor.num_image_tokens if token == SENTINEL else 1
        out_ids += [processor.image_token_id] * n if token == SENTINEL else [token]
        out_labels += [IGNORE_INDEX] * n if token == SENTINEL else [label]
    return out_ids, out_labels


@pytest.fixture(scope="module")
def slow_tokenizer():
    return SlowLlamaTokenizer(SP_FOLDER / "tokenizer.model")


@pytest.fixture(scope="module")
def processor():
    return paper_processor(str(SP_FOLDER), "interleave")  # I-MoF: 1152 placeholders per image


def ours(rounds, template: str, processor, has_image: bool):
    conversations = []
    for k, (question, answer) in enumerate(rounds):
        marker = "<image>\n" if has_image and k == 0 else ""
        conversations += [turn("human", marker + question), turn("gpt", answer)]
    raw = {"id": "golden", "conversations": conversations, **({"image": "x.jpg"} if has_image else {})}
    record = parse_record(raw, RecordLocation("golden.json", 0, 1))
    sample = tokenize_record(record, get_template(template), processor, max_length=8192)
    assert sample.problem is None and not sample.truncated
    return sample.input_ids.tolist(), sample.labels.tolist()


WORDS = [("What color is the bus?", "The bus is red.")]
DIGIT = [("How many dogs are there?", "2")]
DIGIT_WORDS = [("How many dogs are there?", "3 dogs")]
NUMBERED_LIST = [("List the objects.", "1. A bus.\n2. A dog.")]
NEWLINE_LED = [("Describe the scene.", "\nA street with a bus.")]
MULTI_TURN = [
    ("What color is the bus?", "The bus is white and red."),
    ("How many people are on it?", "12"),
    ("Describe it.", "\nA city bus."),
    ("Answer the question using a single word or phrase. Is it moving?", "Yes"),
]
CASES = {
    "words": WORDS,
    "digit": DIGIT,
    "digit-words": DIGIT_WORDS,
    "numbered-list": NUMBERED_LIST,
    "newline-led": NEWLINE_LED,
    "multi-turn": MULTI_TURN,
}


@pytest.mark.parametrize("has_image", [True, False], ids=["image", "text-only"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("template", ["vicuna_v1", "llava_v1"])
def test_v1_ids_and_labels_equal_llava_preprocess_v1(template, case, has_image, processor, slow_tokenizer):
    rounds = CASES[case]
    prompt = llava_v1_prompt(SYSTEMS[template], rounds, has_image)
    ref_ids, ref_labels, mismatch = preprocess_v1(prompt, slow_tokenizer, has_image)
    assert not mismatch  # LLaVA keeps this sample: its labels are the reference
    expected_ids, expected_labels = (
        expand_image(ref_ids, ref_labels, processor) if has_image else (ref_ids, ref_labels)
    )
    ids, labels = ours(rounds, template, processor, has_image)
    assert ids == expected_ids
    assert labels == expected_labels


@pytest.mark.parametrize("caption", ["a red bus on a street", "3 - inch gel memory foam", "\nA bus."])
def test_plain_ids_and_labels_equal_llava_preprocess_plain(caption, processor, slow_tokenizer):
    expected_ids, expected_labels = expand_image(*preprocess_plain(caption, slow_tokenizer), processor)
    raw = {"image": "x.jpg", "conversations": [turn("human", "Describe.\n<image>"), turn("gpt", caption)]}
    sample = tokenize_record(
        parse_record(raw, RecordLocation("golden.json", 0, 1)), get_template("plain"), processor, 4096
    )
    assert sample.input_ids.tolist() == expected_ids
    assert sample.labels.tolist() == expected_labels


def test_the_reference_supervises_the_bare_space_before_a_digit(slow_tokenizer):
    # What this file is about: after "ASSISTANT:" a digit answer starts with a bare "▁" piece, and
    # LLaVA trains on it (as on every token after "ASSISTANT:").
    prompt = llava_v1_prompt(SYSTEMS["vicuna_v1"], DIGIT, has_image=False)
    ids, labels, _ = preprocess_v1(prompt, slow_tokenizer, has_image=False)
    pieces = [slow_tokenizer.sp.id_to_piece(i) for i in ids]
    first = next(k for k, label in enumerate(labels) if label != IGNORE_INDEX)
    assert pieces[first - 1] == ":" and pieces[first:] == [SPIECE, "2", "</s>"]
