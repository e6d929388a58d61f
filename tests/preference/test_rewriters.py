"""Error-injection rewriters: the rule rewriter's swaps, BPO's prompt templates, the local causal LM
in Vicuna's wrapper, an OpenAI-compatible endpoint on 127.0.0.1, and precomputed rewrites."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from mof_llava.preference.rewriters import (
    CausalLMRewriter,
    EndpointRewriter,
    PrecomputedRewriter,
    RewriteItem,
    RewriterError,
    RuleRewriter,
    Sampling,
    VLLMRewriter,
    injection_prompt,
    load_template,
)

# BPO's description-mode prompt as extensions-lion-bpo.md §B1 quotes it from error_injection.py.
BPO_DESCRIPTION = (
    "I will give you a description an image. You must modify the description by changing the original "
    "details, such as adding more object, deleting objects, or changing the attributes of objects (color, "
    "shape, size, location), make sure that the changed description is common and logical.Description: "
    "{response}. Modified description:"
)
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
ITEMS = [RewriteItem("a", "What is in the picture?", "Two red dogs chase a cat past 3 buses."),
         RewriteItem("b", "What colour is it?", "It is Green.")]  # fmt: skip


def test_rule_swaps_numbers_colours_and_objects_deterministically():
    texts = RuleRewriter().rewrite(ITEMS)
    # By hand: two -> three, red -> blue, dogs <-> cats, cat -> dog, 3 -> 4, buses -> cars, Green -> Yellow.
    assert texts == ["Three blue cats chase a dog past 4 cars.", "It is Yellow."]
    assert RuleRewriter().rewrite(ITEMS) == texts
    assert RuleRewriter().rewrite([RewriteItem("c", "q", "Nothing to change.")]) == ["Nothing to change."]


def test_the_description_template_is_bpos_prompt_and_qa_has_both_fields():
    assert load_template("description") == BPO_DESCRIPTION
    qa = injection_prompt(ITEMS[1], load_template("qa"))
    assert qa.startswith("Suppose you are looking at a similar but different image")
    assert qa.endswith("Question: What colour is it?\nAnswer: It is Green.\nModified answer:")
    with pytest.raises(RewriterError, match="must be one of description, qa, got 'poem'"):
        load_template("poem")


def test_the_local_lm_reads_the_template_in_vicunas_wrapper(tiny_parts, one_torch_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rewriter = CausalLMRewriter(tiny_parts.llm, "description", Sampling(temperature=0.0, max_new_tokens=4))
    got = rewriter.rewrite(ITEMS[:1])
    # The same answer from the prompt written out by hand.
    prompt = f"{VICUNA_SYSTEM} USER: {BPO_DESCRIPTION.format(response=ITEMS[0].response)} ASSISTANT:"
    tokenizer, model = (
        AutoTokenizer.from_pretrained(tiny_parts.llm),
        AutoModelForCausalLM.from_pretrained(tiny_parts.llm),
    )
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, do_sample=False, max_new_tokens=4, pad_token_id=tokenizer.unk_token_id)
    assert got == [tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()]


class _Endpoint(BaseHTTPRequestHandler):
    requests: list[dict] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, **body})
        reply = {"choices": [{"message": {"content": f" rewritten #{len(type(self).requests)} "}}]}
        data = json.dumps(reply).encode() if type(self).status == 200 else b"{}"
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    _Endpoint.requests, _Endpoint.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_the_endpoint_gets_one_chat_request_per_item(endpoint):
    texts = EndpointRewriter(endpoint, "vicuna-7b", "qa", temperature=0.8).rewrite(ITEMS)
    assert texts == ["rewritten #1", "rewritten #2"]
    first = _Endpoint.requests[0]
    assert (first["path"], first["model"], first["temperature"]) == ("/v1/chat/completions", "vicuna-7b", 0.8)
    assert first["messages"] == [{"role": "user", "content": injection_prompt(ITEMS[0], load_template("qa"))}]


def test_an_endpoint_refusal_is_one_line(endpoint):
    _Endpoint.status = 400
    with pytest.raises(
        RewriterError, match=r"rewriter endpoint: judge at http://127.0.0.1:\d+/v1/chat/completions failed"
    ):
        EndpointRewriter(endpoint, "m", "description").rewrite(ITEMS[:1])


def test_precomputed_rewrites_by_id(tmp_path):
    path = tmp_path / "rewrites.jsonl"
    path.write_text('{"id": "b", "rejected": "It is red."}\n{"id": "a", "rejected": "One cat."}\n')
    assert PrecomputedRewriter(path).rewrite(ITEMS) == ["One cat.", "It is red."]
    path.write_text('{"id": "b", "rejected": "x"}\n')
    with pytest.raises(RewriterError, match=r"rewrites.jsonl: no rewrite for record id 'a'"):
        PrecomputedRewriter(path).rewrite(ITEMS)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '{"id": "a", "rejected": "x"}\n{"id": "a", "rejected": "y"}\n',
            r"rewrites.jsonl:2: id 'a' is already given at line 1",
        ),
        ('{"id": "a", "rejected": "x"}\n{"id": "b"}\n', r"rewrites.jsonl:2: expected an object"),
        ('{"id": "a", "rejected": "x"}\n{"id": \n', r"rewrites.jsonl:2: not valid JSON"),
    ],
)
def test_a_bad_precomputed_file_names_its_line(tmp_path, text, message):
    path = tmp_path / "rewrites.jsonl"
    path.write_text(text)
    with pytest.raises(RewriterError, match=message):
        PrecomputedRewriter(path)


def test_without_vllm_its_rewriter_names_the_extra():
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here; the missing-extra message cannot be shown")
    with pytest.raises(RewriterError, match=r"pip install 'mof-llava\[vllm\]'"):
        VLLMRewriter("some/model", "description")
