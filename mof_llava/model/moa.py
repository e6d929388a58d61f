"""LION's mixture of adapters in the LLM (JiuTian-LION, arXiv 2311.11860), one router per decoder layer.

    decoder layer:  h ── post_attention_layernorm ── mlp ──(+)── h + mlp(LN(h)) + router(x)
                    └─────────────── x ─── router ──────┘
    router(x) = sum_k adapter_k(x) * gates[k, task]       adapter_k = up(ReLU(down(x))), bottleneck 64

- `x` is where `MoaSpec.placement` says: `pre_norm_residual` (LION's, the un-normalised residual `h`
  the MLP sublayer starts from) or `post_norm_mlp_input` (the MLP's own input, `LN(h)`).
- The gates are per task and per channel, initialised to a hard assignment: task k uses adapter k
  only. The up-projections start at zero, so at init the model computes exactly what the LLM alone
  does, whatever the gates.
- The task of each sample comes from the data (`task_ids`, one per row or one per token for packed
  rows); LION takes one task per batch from its first sample.
- The routers live on the MoF-LLaVA model (`model.moa`), outside the LLM: they are hooked onto the
  LLM's decoder layers (`attach`), so the LLM's checkpoint, its parameter names and peft's LoRA
  targets stay as they are, and the routers initialise with the rest of the MoF-LLaVA parts.

Deviation from LION: its adapters also carry a learnable scalar (init 1); the per-channel gates and
the up-projection already scale every output channel, so it is left out.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_path
from .aggregator import ZeroInitLinear
from .configuration import MoaSpec, MofLlavaConfigError


class BottleneckAdapter(nn.Module):
    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)  # PyTorch's default (Kaiming-uniform) init, as LION's
        self.up = ZeroInitLinear(bottleneck, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.down(x)))


class AdapterRouter(nn.Module):
    """One decoder layer's adapters and their gates `[n_adapters, n_tasks, width]`."""

    def __init__(self, width: int, spec: MoaSpec):
        super().__init__()
        n = len(spec.tasks)
        self.adapters = nn.ModuleList(BottleneckAdapter(width, spec.bottleneck) for _ in range(n))
        self.gates = nn.Parameter(hard_assignment(n, width))

    def forward(self, x: torch.Tensor, task_ids: torch.Tensor | int) -> torch.Tensor:
        """x [n, length, width]; task_ids an int (every token), [n] (one per row) or [n, length]."""
        gates = self.gates[:, task_ids]  # [k, width], [k, n, width] or [k, n, length, width]
        if gates.dim() == 3:
            gates = gates.unsqueeze(2)
        out = 0
        for k, adapter in enumerate(self.adapters):
            out = out + adapter(x) * gates[k].to(x.dtype)
        return out


def hard_assignment(n_tasks: int, width: int) -> torch.Tensor:
    """gates[k, t] = 1 where adapter k serves task t (k == t), else 0."""
    return torch.eye(n_tasks).unsqueeze(-1).expand(n_tasks, n_tasks, width).clone()


class MixtureOfAdapters(nn.Module):
    """The routers of every decoder layer, and the task ids of the forward in progress."""

    def __init__(self, spec: MoaSpec, width: int, num_layers: int):
        super().__init__()
        self.spec = spec
        self.routers = nn.ModuleList(AdapterRouter(width, spec) for _ in range(num_layers))
        self._task_ids: torch.Tensor | int = spec.tasks.index(spec.default_task)
        self._inputs: dict[int, torch.Tensor] = {}
        self._hooks: list = []

    def attach(self, language_model: nn.Module) -> None:
        """Hook the routers onto `language_model`'s decoder layers (again, if it was replaced)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks, layers = [], decoder_layers(language_model)
        if len(layers) != len(self.routers):
            raise MofLlavaConfigError(f"moa has {len(self.routers)} routers but the LLM {len(layers)} decoder layers")
        # Hooks are partials of bound methods, not closures: a deep copy of the model (a frozen
        # reference) then hooks its own routers.
        for i, layer in enumerate(layers):
            reads = layer.post_attention_layernorm if self.spec.placement == "pre_norm_residual" else layer.mlp
            self._hooks.append(reads.register_forward_pre_hook(partial(self._keep_input, i)))
            self._hooks.append(layer.mlp.register_forward_hook(partial(self._add_adapters, i)))

    def adapters_of(self, task: str) -> list[nn.Module]:
        """Task `task`'s adapter (the one its gates start on) in every layer."""
        k = self.spec.tasks.index(task)
        return [router.adapters[k] for router in self.routers]

    def gates(self) -> list[nn.Parameter]:
        return [router.gates for router in self.routers]

    def reset_parameters(self) -> None:
        """Fresh routers: default-init down-projections, zero up-projections, hard-assignment gates."""
        for router in self.routers:
            for adapter in router.adapters:
                adapter.down.reset_parameters()
                adapter.up.reset_parameters()
            with torch.no_grad():
                router.gates.copy_(hard_assignment(*router.gates.shape[1:]))

    def route(self, task_ids: torch.Tensor | None) -> None:
        """Set the tasks of the coming forward: [n] or [n, length] ids into `spec.tasks`, or None for
        `spec.default_task`. They stay set until the next call, so that activation checkpointing
        recomputes the layers with them in the backward pass."""
        if task_ids is None:
            self._task_ids = self.spec.tasks.index(self.spec.default_task)
            return
        task_ids = torch.as_tensor(task_ids, dtype=torch.long, device=self.routers[0].gates.device)
        if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= len(self.spec.tasks)):
            raise ValueError(f"task_ids must lie in 0..{len(self.spec.tasks) - 1} (moa tasks {list(self.spec.tasks)})")
        self._task_ids = task_ids

    def _keep_input(self, i: int, module: nn.Module, args: tuple) -> None:
        self._inputs[i] = args[0]

    def _add_adapters(self, i: int, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output + self.routers[i](self._inputs.pop(i), self._task_ids)


def decoder_layers(language_model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a transformers causal LM with Llama's layout (`post_attention_layernorm`,
    then `mlp`, added to the residual), which is what the routers are hooked into."""
    decoder = language_model.get_decoder() if hasattr(language_model, "get_decoder") else language_model
    layers = getattr(decoder, "layers", None)
    if layers is None or not all(hasattr(layer, "post_attention_layernorm") and hasattr(layer, "mlp") for layer in layers):
        raise MofLlavaConfigError(
            f"moa needs decoder layers with post_attention_layernorm and mlp (Llama, Mistral, Qwen2); "
            f"{type(language_model).__name__} has none"
        )
    return layers


def build_moa(spec: MoaSpec, text_config) -> MixtureOfAdapters:
    return MixtureOfAdapters(spec, int(text_config.hidden_size), int(text_config.num_hidden_layers))


# A LoRA run's artifact holds peft's weights only: the routers are saved beside them in this file.
WEIGHTS_NAME = "moa.safetensors"
PREFIX = "moa."


def save_moa_weights(state_dict: dict[str, torch.Tensor], directory: str | Path) -> Path:
    """Write the `moa.` entries of a model state dict (gathered, under ZeRO-3) to `directory`."""
    from safetensors.torch import save_file

    state = {k[len(PREFIX) :]: v.detach().to("cpu").contiguous() for k, v in state_dict.items() if k.startswith(PREFIX)}
    path = Path(directory) / WEIGHTS_NAME
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))
    return path


def load_moa_weights(moa: MixtureOfAdapters, directory: str | Path) -> None:
    """Load `save_moa_weights`' file into `moa`, keys and shapes matching exactly."""
    from safetensors.torch import load_file

    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; the model has a mixture of adapters (moa) whose weights go there")
    state, own = load_file(str(path)), moa.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        raise ValueError(f"{path}: does not fit the model's moa (missing {missing[:3]}, unexpected {unexpected[:3]}, or shapes differ)")
    moa.load_state_dict(state, strict=True)
