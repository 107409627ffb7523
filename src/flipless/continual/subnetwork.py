"""Sub-network discovery: frozen signed-constant weights and one set of popup scores per task.

After Ke et al., "Sub-network Discovery and Soft-masking for Continual Learning of Mixed
Tasks" (Findings of EMNLP 2023), who build on the edge-popup idea of Ramanujan et al., "What's
Hidden in a Randomly Weighted Neural Network?" (CVPR 2020). A :class:`PopupLinear` layer keeps

* a frozen weight ``W = sign(W₀) · gain / √fan_in`` (the signs of the layer it replaces), and
* trainable scores ``s_t`` of W's shape for each task t;

its effective weight for task t is ``W ⊙ 1[s_t ≥ 0]``. The threshold has no gradient, so the
scores learn through the straight-through estimator: ``∂L/∂s_t = ∂L/∂W_eff ⊙ W``. When a new
task starts, its scores are copied from the last task's (knowledge transfer) and the earlier
scores are frozen, so each finished task keeps exactly the sub-network it found; at inference
the task id picks the scores (:func:`use_task`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from flipless.errors import InputError


class PopupLinear(nn.Module):
    """A linear map ``y = x (W ⊙ 1[s_t ≥ 0])ᵀ`` with a frozen weight and per-task scores.

    Args:
        weight: the weight ``W₀`` whose signs are kept, shape ``[out, in]``.
        gain: scale of the constant, ``|W| = gain / √in`` (√2 suits ReLU networks).
        generator: seeds the first task's scores (uniform in ±1/√in, so about half of the
            weights start switched on).

    There is no bias: the sub-network is chosen among weights only. ``active_task`` is the task
    whose scores are used; only the last task's scores are trainable.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        gain: float = math.sqrt(2.0),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.numel() == 0:
            raise InputError(
                f"weight must be a non-empty 2-D tensor [out, in]; got "
                f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}."
            )
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain > 0:
            raise InputError(f"gain={gain!r}; expected a positive number.")
        out_features, in_features = weight.shape
        sign = torch.where(weight.detach() >= 0, 1.0, -1.0).to(weight.dtype)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(sign * (gain / math.sqrt(in_features)), requires_grad=False)
        bound = 1 / math.sqrt(in_features)
        first = torch.empty_like(self.weight, dtype=weight.dtype)
        first.uniform_(-bound, bound, generator=generator)
        self.scores = nn.ParameterList([nn.Parameter(first)])
        self.active_task = 0

    @property
    def task_count(self) -> int:
        return len(self.scores)

    @property
    def active_scores(self) -> nn.Parameter:
        return self.scores[self.active_task]

    def mask(self, task: int | None = None) -> torch.Tensor:
        """``1[s_t ≥ 0]`` of the given (default: active) task, without gradient."""
        scores = self.scores[self.active_task if task is None else self._check_task(task)]
        return (scores.detach() >= 0).to(self.weight.dtype)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        scores = self.active_scores
        hard = (scores >= 0).to(scores.dtype)
        straight_through = hard + scores - scores.detach()
        return F.linear(inputs, self.weight * straight_through)

    def add_task(self) -> int:
        """Start a new task: its scores are a trainable copy of the last task's, every earlier
        task's scores are frozen, and the new task becomes active. Returns its index."""
        last = self.scores[-1]
        last.requires_grad_(False)
        self.scores.append(nn.Parameter(last.detach().clone()))
        self.active_task = len(self.scores) - 1
        return self.active_task

    def _check_task(self, task: int) -> int:
        if isinstance(task, bool) or not isinstance(task, int) or not 0 <= task < len(self.scores):
            raise InputError(
                f"task={task!r}; expected an integer in [0, {len(self.scores) - 1}] (the layer "
                f"knows {len(self.scores)} task(s); add_task() starts another)."
            )
        return task

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"tasks={len(self.scores)}, active_task={self.active_task}"
        )


def to_subnetwork(
    model: nn.Module, layers: dict[str, nn.Module], gain: float = math.sqrt(2.0), seed: int = 0
) -> dict[str, PopupLinear]:
    """Replace each ``nn.Linear`` of ``layers`` (name → module, e.g. from
    :func:`~flipless.continual.importance.select_layers`) in ``model`` by a :class:`PopupLinear`
    built from its weight's signs; the layers' biases are dropped. Returns the new layers by
    name. Layers not replaced keep training as usual (and are shared by every task)."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if not layers:
        raise InputError("layers is empty; expected {name: nn.Linear} from select_layers.")
    generator = torch.Generator().manual_seed(seed)
    replaced: dict[str, PopupLinear] = {}
    for name, module in layers.items():
        if not isinstance(module, nn.Linear):
            raise InputError(
                f"layer {name!r} is a {type(module).__name__}; only nn.Linear layers can become "
                "PopupLinear sub-network layers."
            )
        popup = PopupLinear(module.weight, gain=gain, generator=generator)
        popup.to(module.weight.device)
        _set_submodule(model, name, popup)
        replaced[name] = popup
    return replaced


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    if not name:
        raise InputError("the model itself cannot be replaced; wrap a single layer in a module.")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def popup_layers(model: nn.Module) -> dict[str, PopupLinear]:
    """The :class:`PopupLinear` layers of ``model`` by name (an error if there are none)."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, PopupLinear)}
    if not layers:
        raise InputError(
            f"{type(model).__name__} has no PopupLinear layer; convert it with to_subnetwork first."
        )
    return layers


def add_task(model: nn.Module) -> int:
    """Start a new task on every sub-network layer of ``model`` (see
    :meth:`PopupLinear.add_task`); build the optimizer after this call so that it holds the new
    scores. Returns the new task's index."""
    indices = {layer.add_task() for layer in popup_layers(model).values()}
    if len(indices) != 1:
        raise InputError(
            f"the sub-network layers of {type(model).__name__} know different numbers of tasks "
            f"({sorted(indices)}); they must be converted together and grown with add_task."
        )
    return indices.pop()


def set_task(model: nn.Module, task: int) -> None:
    """Make ``task``'s scores active in every sub-network layer (inference by task id)."""
    for layer in popup_layers(model).values():
        layer.active_task = layer._check_task(task)


@contextmanager
def use_task(model: nn.Module, task: int) -> Iterator[nn.Module]:
    """Run ``model`` with ``task``'s sub-network inside the block, then restore the task that
    was active before."""
    layers = popup_layers(model)
    previous = {name: layer.active_task for name, layer in layers.items()}
    set_task(model, task)
    try:
        yield model
    finally:
        for name, layer in layers.items():
            layer.active_task = previous[name]
