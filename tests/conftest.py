"""Shared fixtures: tiny random checkpoints saved to disk and loaded through `from_pretrained`,
exactly as real ones are. Nothing here touches the network."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread unless the caller says otherwise: tiny models gain nothing from more, and a fixed
# count keeps runs that are compared with each other (straight vs resumed, subprocesses) from taking
# different counts from a changing load average (mof_llava/threads.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import mof_llava.model  # noqa: E402,F401  (registers the Auto classes)
from mof_llava.testing.tiny import save_tiny_checkpoints, save_tiny_mof_llava  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_output_settings():
    """`mof-llava` commands run in-process write the run's verbosity into os.environ (for the
    processes they start, mof_llava/verbosity.py); put it back after each test."""
    keys = ("MOF_LLAVA_VERBOSE", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")
    saved = {key: os.environ.get(key) for key in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def one_torch_thread():
    """Torch at one thread for the test, then back: tiny models gain nothing from more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_parts(tmp_path_factory):
    """Tiny LLM (+ tokenizer), CLIP-vision and DINOv2 checkpoint directories."""
    return save_tiny_checkpoints(tmp_path_factory.mktemp("tiny_parts"))


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """Saved tiny MoF-LLaVA models, one per mixing mode, built lazily and cached for the session."""
    cache: dict[str, object] = {}

    def get(mixer: str = "interleave", alpha: float = 0.0):
        key = f"{mixer}-{alpha}"
        if key not in cache:
            cache[key] = save_tiny_mof_llava(tmp_path_factory.mktemp(f"tiny_{key}"), mixer=mixer, alpha=alpha)
        return cache[key]

    return get


@pytest.fixture
def tower_inputs(monkeypatch):
    """`record(model)` makes the model's towers keep every pixel tensor they are given (before their
    own re-normalisation) and returns {tower: [tensors in call order]}; undone after the test."""

    def record(model) -> dict[str, list[torch.Tensor]]:
        seen: dict[str, list[torch.Tensor]] = {}
        for name, tower in model.vision_towers.items():
            original = tower.hidden_states

            def wrapped(pixel_values, layers, _name=name, _original=original):
                seen.setdefault(_name, []).append(pixel_values.detach().clone())
                return _original(pixel_values, layers)

            monkeypatch.setattr(tower, "hidden_states", wrapped)
        return seen

    return record


@pytest.fixture
def forwards(monkeypatch):
    """The task_ids and input_ids of every forward the MoF-LLaVA model runs (LION's routing, prompts)."""
    import functools

    from mof_llava.model import MofLlavaForConditionalGeneration

    calls = []
    original = MofLlavaForConditionalGeneration.forward

    @functools.wraps(original)  # generate() checks its kwargs against forward's signature
    def recording(self, *args, **kwargs):
        calls.append({"task_ids": kwargs.get("task_ids"), "input_ids": kwargs.get("input_ids")})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MofLlavaForConditionalGeneration, "forward", recording)
    return calls
