"""What the preference stage's reference forward costs: it holds no layer's hidden states once the LLM
has run (the LM head then scores from the last hidden state alone), and the MFU estimate counts its
FLOPs, checked against the tiny model's shapes by hand."""

from __future__ import annotations

import copy
import weakref

import pytest
import torch
from dpo_helpers import LORA, pair_batch, preference_trainer, tiny_model
from pair_data import write_pairs

from mof_llava.preference.collator import PreferenceCollator
from mof_llava.preference.dpo import response_labels, sequence_logps
from mof_llava.training import reference_logps
from mof_llava.training.stages import apply_stage, base_model
from mof_llava.training.throughput import FlopsModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("pairs"), n=4)


class LiveHiddenStates:
    """Weak references to every decoder layer's input and output; each time the LM head runs, how many
    of those tensors (and bytes) are still alive."""

    def __init__(self, model):
        base = base_model(model)
        self.refs: list[weakref.ref] = []
        self.at_head: list[tuple[int, int]] = []
        self.handles = [base.get_output_embeddings().register_forward_pre_hook(self._count)]
        for layer in base.get_decoder().layers:
            self.handles.append(layer.register_forward_pre_hook(lambda m, args: self._track(args[0])))
            self.handles.append(layer.register_forward_hook(lambda m, args, out: self._track(out)))

    def _track(self, tensor):
        self.refs.append(weakref.ref(tensor if isinstance(tensor, torch.Tensor) else tensor[0]))

    def _count(self, module, args):
        alive = {id(t): t for t in (r() for r in self.refs) if t is not None}
        self.at_head.append((len(alive), sum(t.numel() * t.element_size() for t in alive.values())))

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _reference_run(mode, model, processor, pairs, tmp_path):
    """The module the reference forward runs through, and a call that scores the batch with it."""
    batch, dataset = pair_batch(pairs, processor)
    labels = batch.pop("labels")
    if mode == "precomputed":
        collator = PreferenceCollator(processor.pad_token_id)
        return model, lambda: reference_logps.compute(model, dataset, collator, 4, 1024, "cpu")
    if mode == "frozen_copy":
        reference = copy.deepcopy(model)
        trainer = preference_trainer(apply_stage(model, "preference"), tmp_path, mode, reference)
        return reference, lambda: trainer.reference_logps(trainer.model, batch, labels)
    trainer = preference_trainer(apply_stage(model, "preference", LORA), tmp_path)
    return trainer.model, lambda: trainer.reference_logps(trainer.model, batch, labels)


@pytest.mark.parametrize("mode", ["lora_disabled", "frozen_copy", "precomputed"])
def test_reference_forward_holds_no_layer_output_when_the_head_scores(tiny_parts, pairs, tmp_path, mode):
    model, processor = tiny_model(tiny_parts)
    module, score = _reference_run(mode, model, processor, pairs, tmp_path)
    live = LiveHiddenStates(module)
    with torch.no_grad():
        score()
    live.remove()
    assert len(live.at_head) >= 2  # the model's own one-position head, then sequence_logps's chunks
    assert live.at_head[-1] == (0, 0)


def test_output_hidden_states_would_hold_every_layer_and_scores_the_same(tiny_parts, pairs, tmp_path):
    """The counter's control: the forward that asks for every layer's hidden states keeps the embeddings
    and each layer's output (the last one replaced by the normed state) alive while the head scores,
    and both ways give bit-identical log-probs."""
    model, processor = tiny_model(tiny_parts)
    trainer = preference_trainer(apply_stage(model, "preference", LORA), tmp_path)
    batch, _ = pair_batch(pairs, processor)
    labels = batch.pop("labels")
    base = base_model(trainer.model)
    live = LiveHiddenStates(trainer.model)
    with torch.no_grad():
        outputs = trainer.model(**batch, output_hidden_states=True, logits_to_keep=1)
        scored = response_labels(labels, batch["input_ids"], base.config.image_token_id)
        held = sequence_logps(outputs.hidden_states[-1], base.get_output_embeddings(), scored, 1024)[0]
        held_at_head, live.at_head = live.at_head, []
        del outputs
        ours = trainer.response_logps(trainer.model, batch, labels)[0]
    live.remove()
    layers, hidden = base.config.text_config.num_hidden_layers, base.config.text_config.hidden_size
    rows, length = batch["input_ids"].shape
    assert held_at_head[-1] == (layers, layers * rows * length * hidden * 4)  # float32
    assert live.at_head[-1] == (0, 0)
    assert torch.equal(ours, held)


def _hand_counts(model) -> tuple[int, int, float]:
    """(LLM parameters that multiply, LoRA r=4 parameters on its linear layers, towers' FLOPs per image)
    from the tiny Llama's shapes: attention q/k/v/o, the gated MLP, two norms a layer, final norm, head."""
    text = model.config.text_config
    h, mlp, layers = text.hidden_size, text.intermediate_size, text.num_hidden_layers
    kv = text.num_key_value_heads * h // text.num_attention_heads
    layer = h * h * 2 + h * kv * 2 + 3 * h * mlp + 2 * h
    llm = layers * layer + h + text.vocab_size * h
    linears = [(h, h), (h, kv), (h, kv), (h, h), (h, mlp), (h, mlp), (mlp, h)]
    lora = layers * sum(LORA.r * (fan_in + fan_out) for fan_in, fan_out in linears)
    towers = sum(
        2.0 * sum(p.numel() for p in t.parameters()) * (t.num_patches + 1)
        for t in model.vision_towers.values()
    )
    return llm, lora, towers


@pytest.mark.parametrize("mode", ["lora_disabled", "frozen_copy", "precomputed"])
def test_mfu_counts_the_reference_forward(tiny_parts, tmp_path, mode):
    model, _ = tiny_model(tiny_parts)
    n, lora, towers = _hand_counts(model)
    reference = copy.deepcopy(model) if mode == "frozen_copy" else None
    policy = apply_stage(model, "preference", None if mode == "frozen_copy" else LORA)
    trainer = preference_trainer(policy, tmp_path, mode, reference, flops_model=FlopsModel.for_model(policy))
    tokens, images = 100, 3
    if mode == "frozen_copy":  # full LLM: 6N for the policy, 2N for the frozen copy's forward
        expected = (6 * n + 2 * n) * tokens + 2 * towers * images
    else:  # LoRA: 4(N + L) through the policy, 2L weight gradients; lora_disabled's forward 2N, no LoRA
        reference_llm = 2 * n if mode == "lora_disabled" else 0
        expected = (4 * (n + lora) + 2 * lora + reference_llm) * tokens
        expected += (2 if mode == "lora_disabled" else 1) * towers * images
    assert trainer.flops_model.step_flops(tokens, images) == expected
