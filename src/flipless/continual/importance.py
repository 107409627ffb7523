"""Importance of each weight (or unit) for a learned task, for soft-masking later tasks.

After Ke et al., "Sub-network Discovery and Soft-masking for Continual Learning of Mixed
Tasks" (Findings of EMNLP 2023). A dummy all-ones multiplier ``a`` (shape of the weight W) is
put on each selected layer's effective weight, ``W_eff = a ⊙ W``, and one pass over the task's
data with a proxy loss L accumulates ``g = Σ_batches ∂L/∂a`` (at a = 1 this is
``∂L/∂W_eff ⊙ W``). Then, per output row r (the first weight axis):

* ``granularity="parameter"``: ``z[r, j] = (g[r, j] − mean_j g[r]) / std_j g[r]``;
* ``granularity="unit"``: ``s[r] = Σ_j g[r, j]`` and ``z[r] = (s[r] − mean s) / std s``;

and ``importance = |tanh(z)|`` ∈ [0, 1] (the published code used ``1 − z``, unbounded). The
std is the population one (divide by n); a row (or layer) whose values are all equal has
z = 0, so importance 0. Across tasks, :func:`accumulate` takes the element-wise maximum.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset, default_collate

from flipless.continual.subnetwork import PopupLinear
from flipless.data.labeled import LabeledData
from flipless.errors import FileFormatError, InputError, MismatchError

GRANULARITIES = ("unit", "parameter")
WEIGHTED_LAYERS = (nn.Linear, PopupLinear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
FORMAT = "flipless-importance"
LossFunction = Callable[[nn.Module, dict[str, Any]], torch.Tensor]
LayerSelection = type | tuple[type, ...] | str | Sequence[str] | None

# Named layer sets (regular expressions searched in the qualified module name): the attention
# and feed-forward projections of BERT-family encoders (BERT, RoBERTa, MiniLM, DistilBERT
# spellings) and the low-rank adapters of LoRA (peft's ``lora_A`` / ``lora_B``).
_ATTENTION = (
    r"\.attention\.self\.(query|key|value)$",
    r"\.attention\.output\.dense$",
    r"\.attention\.(q_lin|k_lin|v_lin|out_lin)$",
)
_FEED_FORWARD = (r"\.intermediate\.dense$", r"\.layer\.\d+\.output\.dense$", r"\.ffn\.lin[12]$")
LAYER_PRESETS: dict[str, tuple[str, ...]] = {
    "hf-attention": _ATTENTION,
    "hf-feed-forward": _FEED_FORWARD,
    "hf-encoder": _ATTENTION + _FEED_FORWARD,
    "lora": (r"\.lora_[AB]\.[^.]+$", r"\.lora_[AB]$"),
}


def select_layers(
    model: nn.Module,
    include: type | tuple[type, ...] = (nn.Linear, PopupLinear),
    names: str | Sequence[str] | None = None,
    preset: str | None = None,
) -> dict[str, nn.Module]:
    """The submodules of ``model`` that are instances of ``include`` and, when ``names`` is
    given, whose qualified name matches one of its fnmatch patterns ("body.*", "head"); or,
    with ``preset``, whose name matches one of :data:`LAYER_PRESETS` ("hf-attention",
    "hf-feed-forward", "hf-encoder", "lora"). The model itself counts, under the name "" (a
    bare ``nn.Linear``)."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    if preset is not None:
        if preset not in LAYER_PRESETS:
            raise InputError(f"preset={preset!r}; expected one of {sorted(LAYER_PRESETS)}.")
        if names is not None:
            raise InputError("give names or preset, not both.")
        expressions = [re.compile(expression) for expression in LAYER_PRESETS[preset]]
        names = [
            name
            for name, _ in model.named_modules()
            if any(expression.search("." + name) for expression in expressions)
        ]
        if not names:
            raise InputError(
                f"no layer of {type(model).__name__} matches preset {preset!r}; expected names "
                f"like {LAYER_PRESETS[preset][0]!r}. Pass fnmatch patterns in names instead "
                f"(layer names: {[n for n, _ in model.named_modules() if n][:10]})."
            )
    if isinstance(include, type):
        include = (include,)
    if not isinstance(include, tuple) or not all(isinstance(kind, type) for kind in include):
        raise InputError(f"include={include!r}; expected a module type or a tuple of types.")
    patterns = _patterns(names)
    selected = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, include)
        and (patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns))
    }
    if not selected:
        kinds = ", ".join(kind.__name__ for kind in include)
        raise InputError(
            f"no layer of {type(model).__name__} is a {kinds}"
            + (f" with a name matching {list(patterns)}" if patterns else "")
            + "; expected at least one. Check the layer types or name patterns "
            f"(layer names: {[n for n, _ in model.named_modules() if n][:10]})."
        )
    for name, module in selected.items():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, nn.Parameter) or weight.ndim < 2:
            raise InputError(
                f"layer {name!r} ({type(module).__name__}) has no weight parameter with an "
                "output axis (ndim ≥ 2); select layers such as nn.Linear or nn.Conv2d."
            )
    return selected


def _patterns(names: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    if isinstance(names, str):
        return (names,)
    if isinstance(names, Sequence) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    raise InputError(f"names={names!r}; expected a pattern string or a non-empty list of them.")


def resolve_layers(model: nn.Module, layers: LayerSelection) -> dict[str, nn.Module]:
    """The layers named by a :data:`LayerSelection` (see :func:`compute_importance`)."""
    if layers is None:
        return select_layers(model)
    if isinstance(layers, str) and layers in LAYER_PRESETS:
        return select_layers(model, preset=layers)
    if isinstance(layers, type) or (
        isinstance(layers, tuple) and layers and all(isinstance(k, type) for k in layers)
    ):
        return select_layers(model, include=layers)
    return select_layers(model, include=WEIGHTED_LAYERS, names=layers)


def task_loss(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The default proxy loss: mean cross-entropy of ``model(batch["inputs"])`` and the labels."""
    return F.cross_entropy(_logits(model(batch["inputs"])), batch["labels"])


DROPOUT_LAYERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _logits(output: Any) -> torch.Tensor:
    if isinstance(output, (tuple, list)):
        output = output[0]
    return output.logits if hasattr(output, "logits") else output


def self_kl_loss(model: nn.Module) -> LossFunction:
    """The proxy of DAS (Ke et al., ICLR 2023) for data without labels: the KL divergence
    ``KL(p_frozen ‖ p_model)`` between a frozen copy of ``model`` run without dropout and the
    model run in train mode, summed over classes and averaged over the batch. Train mode makes
    every dropout active, also the functional attention dropout of transformers models, which
    reads its attention module's ``training`` flag; layers with running statistics (batch
    norm) stay in eval mode and keep their statistics. At the trained weights the two only
    differ by the dropout noise, so a model without dropout layers with p > 0 gets a zero
    gradient (up to rounding noise, which standardisation would blow up to importances near
    1): that is refused."""
    if not any(isinstance(m, DROPOUT_LAYERS) and m.p > 0 for m in model.modules()):
        raise InputError(
            f"loss='self-kl' needs dropout with p > 0 in the model (the perturbation it "
            f"measures), and {type(model).__name__} has none; use loss='task' or a callable "
            "loss(model, batch)."
        )
    frozen = copy.deepcopy(model).eval()
    frozen.requires_grad_(False)

    def loss(current: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            target = F.log_softmax(_logits(frozen(batch["inputs"])).double(), dim=-1)
        current.train()
        for module in current.modules():
            if getattr(module, "running_mean", None) is not None:
                module.eval()
        prediction = F.log_softmax(_logits(current(batch["inputs"])).double(), dim=-1)
        return F.kl_div(prediction, target, log_target=True, reduction="batchmean")

    return loss


class _LossCall(nn.Module):
    """Holds the model so that ``functional_call`` can swap its weights for ``a ⊙ W``."""

    def __init__(self, model: nn.Module, loss: LossFunction) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        return self.loss(self.model, batch)


def _batches(data: Dataset, batch_size: int, device: torch.device) -> list[dict[str, Any]]:
    if not isinstance(data, Dataset) or not hasattr(data, "__len__") or len(data) == 0:
        raise InputError(
            f"data must be a non-empty map-style Dataset (LabeledData); got {type(data).__name__}."
        )
    batches = []
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        if isinstance(data, LabeledData) and isinstance(data.inputs, torch.Tensor):
            batch: dict[str, Any] = {
                "inputs": data.inputs[start:stop],
                "labels": data.labels[start:stop],
                "ids": data.ids[start:stop],
            }
        else:
            batch = default_collate([data[i] for i in range(start, stop)])
        batches.append(
            {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        )
    return batches


def standardised_importance(gradient: torch.Tensor, granularity: str) -> torch.Tensor:
    """``|tanh(z)|`` of the accumulated multiplier gradient ``g`` (see the module docstring):
    shape of ``g`` for "parameter", ``[g.shape[0]]`` for "unit"."""
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity={granularity!r}; expected one of {GRANULARITIES}.")
    values = gradient.flatten(1) if granularity == "parameter" else gradient.flatten(1).sum(1)
    mean = values.mean(dim=-1, keepdim=True)
    std = values.std(dim=-1, correction=0, keepdim=True)
    centred = values - mean
    z = torch.where(std > 0, centred / torch.where(std > 0, std, 1), torch.zeros_like(centred))
    importance = torch.tanh(z).abs()
    return importance.reshape(gradient.shape) if granularity == "parameter" else importance


def compute_importance(
    model: nn.Module,
    data: Dataset,
    layers: LayerSelection = None,
    *,
    loss: str | LossFunction = "task",
    batch_size: int = 64,
    granularity: str = "unit",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Layer name → importance in [0, 1] for the task of ``data`` (see the module docstring).

    Args:
        model: the trained model; left unchanged (weights, ``.grad``, train/eval mode).
        data: the task's data (LabeledData or a Dataset of dict batches), read in order.
        layers: None (every nn.Linear and sub-network layer), a preset name of
            :data:`LAYER_PRESETS`, a module type or tuple of types, or fnmatch name
            patterns ("body.*") that pick among the Linear and Conv layers.
        loss: "task" (cross-entropy with the batch's labels), "self-kl" (:func:`self_kl_loss`:
            KL of the model with dropout to a frozen copy of itself, no labels needed), or
            ``loss(model, batch) -> scalar``.
        batch_size: samples per forward pass.
        granularity: "unit" (one value per output row, shape [out]) or "parameter" (shape of
            the weight).
        seed: seeds the random number generators inside the pass (dropout of "self-kl"), so
            that the importance is the same on every call; the global generator is left as
            it was.

    The pass runs in eval mode (with "self-kl", the model under measure in train mode but for
    batch norm); gradients are taken with ``torch.autograd.grad`` with respect to the
    multipliers only, so nothing accumulates in the parameters' ``.grad``.
    """
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity={granularity!r}; expected one of {GRANULARITIES}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r}; expected a positive integer.")
    if loss == "task":
        loss_function: LossFunction = task_loss
    elif loss == "self-kl":
        loss_function = self_kl_loss(model)
    elif callable(loss):
        loss_function = loss
    else:
        raise InputError(
            f"loss={loss!r}; expected 'task', 'self-kl' or a callable loss(model, batch)."
        )
    selected = resolve_layers(model, layers)
    weights = {name: module.weight for name, module in selected.items()}
    device = next(iter(weights.values())).device
    caller = _LossCall(model, loss_function)
    was_training = model.training
    model.eval()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        try:
            totals = _accumulate_gradients(caller, weights, _batches(data, batch_size, device))
        finally:
            model.train(was_training)
    return {name: standardised_importance(g, granularity) for name, g in totals.items()}


def _accumulate_gradients(
    caller: _LossCall, weights: dict[str, torch.Tensor], batches: list[dict[str, Any]]
) -> dict[str, torch.Tensor]:
    """``Σ_batches ∂L/∂a`` per layer, with a fresh all-ones multiplier ``a`` for each batch."""
    totals = {name: torch.zeros_like(w) for name, w in weights.items()}
    for batch in batches:
        multipliers = {name: torch.ones_like(w, requires_grad=True) for name, w in weights.items()}
        overrides = {
            ".".join(filter(None, ("model", name, "weight"))): multipliers[name]
            * weights[name].detach()
            for name in weights
        }
        value = torch.func.functional_call(caller, overrides, (batch,))
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise InputError(
                "the loss must return a scalar tensor; got "
                f"{tuple(value.shape) if isinstance(value, torch.Tensor) else value!r}."
            )
        gradients = torch.autograd.grad(
            value.reshape(()), list(multipliers.values()), allow_unused=True
        )
        for name, gradient in zip(multipliers, gradients, strict=True):
            if gradient is not None:
                totals[name] += gradient
    return totals


def accumulate(
    previous: Mapping[str, torch.Tensor], new: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Importance over tasks: the element-wise maximum per layer; a layer in only one of the
    two keeps its values."""
    merged = dict(previous)
    for name, values in new.items():
        if name not in merged:
            merged[name] = values
            continue
        if merged[name].shape != values.shape:
            raise MismatchError(
                f"importance of layer {name!r} has shape {tuple(merged[name].shape)} before and "
                f"{tuple(values.shape)} now; expected the same (same model and granularity)."
            )
        merged[name] = torch.maximum(merged[name], values.to(merged[name]))
    return merged


def save_importance(
    importance: Mapping[str, torch.Tensor], path: str | os.PathLike[str], *, granularity: str
) -> None:
    """Write ``importance`` to a safetensors file, recording its granularity."""
    if granularity not in GRANULARITIES:
        raise InputError(f"granularity={granularity!r}; expected one of {GRANULARITIES}.")
    if not importance:
        raise InputError("importance is empty; expected at least one layer.")
    tensors = {name: values.detach().cpu().contiguous() for name, values in importance.items()}
    save_file(tensors, os.fspath(path), metadata={"format": FORMAT, "granularity": granularity})


def load_importance(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Read what :func:`save_importance` wrote: ``(importance, granularity)``."""
    try:
        tensors = load_file(os.fspath(path))
        with safe_open(os.fspath(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, SafetensorError) as error:
        raise FileFormatError(
            f"{path}: cannot read it as a safetensors importance file ({error}); expected a "
            "file written by flipless.continual.save_importance."
        ) from error
    granularity = metadata.get("granularity")
    if metadata.get("format") != FORMAT or granularity not in GRANULARITIES:
        raise FileFormatError(
            f"{path}: metadata {metadata}; expected format={FORMAT!r} and a granularity in "
            f"{GRANULARITIES}. Write it with flipless.continual.save_importance."
        )
    return tensors, granularity
