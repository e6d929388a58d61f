"""LION's mixture of adapters in the LLM (config.moa, model/moa.py): the model equals the LLM alone at
init, the gates route each sample's tokens to its task's adapter (JiuTian-LION `lion_adapters.py:116-156`:
gates initialised to a hard assignment, output `A0(h)*G1[t] + A1(h)*G2[t]`), the placement reads the
tensor it names, and the routers survive save/load and train beside LoRA."""

import pytest
import torch
from model_helpers import IMAGE_SIZE, clip_tower
from safetensors.torch import load_file

from mof_llava import MofLlavaForConditionalGeneration
from mof_llava.model.configuration import MoaSpec, MofLlavaConfig, MofLlavaConfigError
from mof_llava.testing.tiny import tiny_llama_config
from mof_llava.training.config import LoraConfig
from mof_llava.training.stages import apply_stage

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PLACEMENTS = ("pre_norm_residual", "post_norm_mlp_input")


def _config(moa=None) -> MofLlavaConfig:
    return MofLlavaConfig(
        text_config=tiny_llama_config(520).to_dict(), vision_towers=[clip_tower()], mixer={},
        image_size=IMAGE_SIZE, image_token_id=512, moa=moa,
    )


def _model(moa=None, seed=0):
    torch.manual_seed(seed)
    return MofLlavaForConditionalGeneration(_config(moa)).eval()


def _pair(placement="pre_norm_residual"):
    """(model without moa, the same model with it): equal weights everywhere else."""
    base = _model()
    moa = _model({"placement": placement}, seed=1)
    result = moa.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys and result.missing_keys
    assert all(k.startswith("moa.routers.") for k in result.missing_keys)
    return base, moa


def _inputs(model, rows=1, length=9):
    torch.manual_seed(2)
    per_image = [1, 5] + [512] * model.config.num_image_tokens + list(range(20, 20 + length))
    return torch.tensor([per_image] * rows), torch.randn(rows, 3, IMAGE_SIZE, IMAGE_SIZE)


def _randomise_up(model):
    """Non-zero up-projections, so that the adapters change the output."""
    torch.manual_seed(3)
    with torch.no_grad():
        for router in model.moa.routers:
            for adapter in router.adapters:
                adapter.up.weight.copy_(torch.randn_like(adapter.up.weight) * 0.5)


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_zero_init_adapters_leave_logits_identical(placement):
    base, moa = _pair(placement)
    ids, pixels = _inputs(base)
    with torch.no_grad():
        expected = base(input_ids=ids, pixel_values=pixels).logits
        for task in (0, 1):
            got = moa(input_ids=ids, pixel_values=pixels, task_ids=torch.tensor([task])).logits
            assert torch.equal(got, expected)
        # ...and not because the routers are absent: non-zero up-projections change the logits.
        _randomise_up(moa)
        assert not torch.equal(moa(input_ids=ids, pixel_values=pixels).logits, expected)


def test_gates_start_as_a_hard_assignment():
    model = _model({"tasks": ["image", "region"]})
    width = model.config.text_config.hidden_size
    for router in model.moa.routers:
        assert router.gates.shape == (2, 2, width)  # [adapter, task, channel]
        assert torch.equal(router.gates[0, 0], torch.ones(width)) and torch.equal(router.gates[1, 1], torch.ones(width))
        assert torch.equal(router.gates[0, 1], torch.zeros(width)) and torch.equal(router.gates[1, 0], torch.zeros(width))
        assert router.adapters[0].down.out_features == 64  # LION's bottleneck
        assert torch.equal(router.adapters[0].up.weight, torch.zeros_like(router.adapters[0].up.weight))


def test_a_zero_gate_gives_its_adapter_no_gradient_and_the_gate_one():
    model = _model({})
    _randomise_up(model)
    with torch.no_grad():  # task 0 reads adapter 0 fully and adapter 1 through a gate at 0 (its init)
        for router in model.moa.routers:
            router.gates[0, 0].fill_(0.7)
    ids, pixels = _inputs(model)
    model.train()
    loss = model(input_ids=ids, pixel_values=pixels, labels=ids, task_ids=torch.tensor([0])).loss
    loss.backward()
    for router in model.moa.routers:
        assert all(torch.count_nonzero(p.grad) == 0 for p in router.adapters[1].parameters())
        assert all(torch.count_nonzero(p.grad) > 0 for p in router.adapters[0].parameters())
        assert torch.count_nonzero(router.gates.grad[1, 0]) > 0  # the closed gate learns
        assert torch.count_nonzero(router.gates.grad[:, 1]) == 0  # task 1 was not in the batch


def test_each_sample_is_routed_by_its_own_task():
    model = _model({})
    _randomise_up(model)
    ids, pixels = _inputs(model, rows=2)
    with torch.no_grad():
        mixed = model(input_ids=ids, pixel_values=pixels, task_ids=torch.tensor([0, 1])).logits
        alone = [model(input_ids=ids[i : i + 1], pixel_values=pixels[i : i + 1], task_ids=torch.tensor([i])).logits
                 for i in (0, 1)]
        # one task id per token (packed rows) routes the same way
        per_token = torch.tensor([0, 1])[:, None].expand(ids.shape)
        packed_style = model(input_ids=ids, pixel_values=pixels, task_ids=per_token).logits
    torch.testing.assert_close(mixed[0:1], alone[0])
    torch.testing.assert_close(mixed[1:2], alone[1])
    torch.testing.assert_close(packed_style, mixed)
    assert not torch.allclose(alone[0], alone[1])  # the same input, two tasks, two outputs


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_the_adapters_read_the_tensor_their_placement_names(placement):
    model = _model({"placement": placement})
    layer, router = model.language_model.get_decoder().layers[0], model.moa.routers[0]
    seen = {}
    hooks = [
        layer.post_attention_layernorm.register_forward_hook(lambda m, a, o: seen.update(residual=a[0], normed=o)),
        router.register_forward_pre_hook(lambda m, a: seen.update(router=a[0])),
    ]
    ids, pixels = _inputs(model)
    with torch.no_grad():
        model(input_ids=ids, pixel_values=pixels)
    for hook in hooks:
        hook.remove()
    wanted = seen["residual"] if placement == "pre_norm_residual" else seen["normed"]
    assert torch.equal(seen["router"], wanted)
    assert not torch.allclose(seen["residual"], seen["normed"])  # the two placements differ


def test_save_load_keeps_the_adapters_and_their_spec(tmp_path):
    model = _model({"placement": "post_norm_mlp_input", "bottleneck": 8})
    _randomise_up(model)
    with torch.no_grad():
        model.moa.routers[1].gates[1, 0].fill_(0.25)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert {"moa.routers.1.gates", "moa.routers.0.adapters.1.up.weight"} <= set(saved)
    loaded = MofLlavaForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.moa_spec == MoaSpec(placement="post_norm_mlp_input", bottleneck=8)
    assert torch.equal(loaded.moa.routers[1].gates, model.moa.routers[1].gates)
    ids, pixels = _inputs(model)
    with torch.no_grad():
        for task in (0, 1):
            task_ids = torch.tensor([task])
            assert torch.equal(loaded(input_ids=ids, pixel_values=pixels, task_ids=task_ids).logits,
                               model(input_ids=ids, pixel_values=pixels, task_ids=task_ids).logits)


def test_adding_moa_to_a_saved_model_starts_it_at_the_identity(tmp_path):
    # A run that starts from a saved model without moa gets its routers initialised by from_pretrained.
    base = _model()
    base.save_pretrained(tmp_path)
    config = MofLlavaConfig.from_pretrained(tmp_path)
    config.moa = MoaSpec().to_dict()
    model = MofLlavaForConditionalGeneration.from_pretrained(tmp_path, config=config).eval()
    assert torch.equal(model.moa.routers[0].gates[0, 0], torch.ones(model.config.text_config.hidden_size))
    ids, pixels = _inputs(base)
    with torch.no_grad():
        got = model(input_ids=ids, pixel_values=pixels, task_ids=torch.tensor([1])).logits
        assert torch.equal(got, base(input_ids=ids, pixel_values=pixels).logits)


def test_lora_and_the_adapters_both_train():
    model = apply_stage(_model({}), "finetune", LoraConfig(r=4, alpha=8))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if ".moa." in n} == {n for n, _ in model.named_parameters() if ".moa." in n}
    assert not any("lora_" in n for n in trainable if ".moa." in n)  # LoRA targets the LLM, never the adapters
    ids, pixels = _inputs(model.get_base_model())
    model.train()
    model(input_ids=ids, pixel_values=pixels, labels=ids, task_ids=torch.tensor([1])).loss.backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    ups = [p for n, p in model.named_parameters() if ".moa." in n and ".adapters.1.up.weight" in n]
    assert lora_b and all(torch.count_nonzero(p.grad) > 0 for p in lora_b)
    assert ups and all(torch.count_nonzero(p.grad) > 0 for p in ups)


def test_generate_routes_by_the_task_given():
    model = _model({})
    _randomise_up(model)
    ids, pixels = _inputs(model)
    kwargs = {"input_ids": ids, "pixel_values": pixels, "max_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        first = model.generate(**kwargs, task_ids=torch.tensor([0]))
        default = model.generate(**kwargs)  # moa.default_task "image" is task 0
        step = model(input_ids=ids, pixel_values=pixels, task_ids=torch.tensor([1])).logits[0, -1].argmax()
        second = model.generate(**kwargs, task_ids=torch.tensor([1]))
    assert torch.equal(first, default)
    assert second[0, ids.shape[1]] == step


def test_task_ids_without_moa_and_bad_specs_are_refused():
    model = _model()
    ids, _ = _inputs(model)
    with pytest.raises(ValueError, match="task_ids route LION's mixture of adapters, which this model has not"):
        model(input_ids=ids[:, -4:], task_ids=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"task_ids must lie in 0\.\.1"):
        _model({})(input_ids=ids[:, -4:], task_ids=torch.tensor([2]))
    with pytest.raises(MofLlavaConfigError, match="moa.default_task 'grounding' is not one of moa.tasks"):
        _config({"default_task": "grounding"})
    with pytest.raises(MofLlavaConfigError, match="unknown moa.placement 'mlp'"):
        _config({"placement": "mlp"})
    with pytest.raises(MofLlavaConfigError, match=r"moa: unknown keys \['gate_init'\]"):
        _config({"gate_init": "soft"})


def test_activation_checkpointing_recomputes_with_the_same_routing():
    grads = []
    for checkpointing in (False, True):
        model = _model({})
        _randomise_up(model)
        if checkpointing:
            model.language_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        ids, pixels = _inputs(model, rows=2)
        model(input_ids=ids, pixel_values=pixels, labels=ids, task_ids=torch.tensor([1, 0])).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.moa.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_a_deep_copy_routes_through_its_own_routers():
    # the preference stage's frozen_copy reference is a deep copy of the model
    import copy

    model = _model({})
    ids, pixels = _inputs(model)
    with torch.no_grad():
        before = model(input_ids=ids, pixel_values=pixels).logits
        clone = copy.deepcopy(model)
        _randomise_up(clone)
        assert torch.equal(model(input_ids=ids, pixel_values=pixels).logits, before)
        assert not torch.equal(clone(input_ids=ids, pixel_values=pixels).logits, before)
        _randomise_up(model)
        torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits,
                                   clone(input_ids=ids, pixel_values=pixels).logits)
