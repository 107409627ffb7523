"""The diagonal Fisher information of a classifier, for Fisher-weighted interpolation.

For a model p_θ(y | x) and examples x_1 … x_N (METHODS.md §3; Matena & Raffel, "Merging
Models with Fisher-Weighted Averaging", NeurIPS 2022),

    F_θ = Σ_i (∂ log p_θ(y_i | x_i) / ∂θ)²,      then   F ← F / mean(F)

element-wise, with y_i the model's own **predicted** label (the default; no gold labels
needed) or the **true** label, and the mean taken over every entry of every parameter, so
that mean(F) = 1 across the whole model. Three ways to compute the sum:

* ``per_example=True`` (default), exact: per-example gradients of a batch at once with
  ``torch.func`` (``vmap(grad(...))`` over ``functional_call``), which holds
  ``batch_size × parameters`` numbers; when the model cannot run under ``vmap`` (data-
  dependent control flow, ``.item()``, inputs that are strings), a loop over single examples
  gives the same numbers, slower.
* ``per_example=False``, an approximation: the square of the gradient of each **batch's
  summed** log-likelihood, (Σ_{i∈B} ∂ log p_i/∂θ)², one backward pass per batch. The cross
  terms make it differ from F unless ``batch_size=1``; use it only when the exact pass is
  too slow, and record that you did.

The model runs in eval mode (dropout off, BatchNorm on its running statistics) and is left
exactly as it was: parameters, ``.grad``, device and train/eval mode. Hugging Face classifiers
work as they are: dict inputs (the tokenizer's ``input_ids``, ``attention_mask``, …) are passed
as keyword arguments when the model's ``forward`` names them (``model(**inputs)``), else as
one argument (``HFLogits``, ``TextClassifier``), and an output's ``.logits`` is used.
A Fisher computed on a wrapper (``HFLogits(model)``: names ``model.…``) and the wrapped
model's state dict or folder (names without the prefix) name the same tensors differently;
:func:`align_fisher_names` (applied by ``interpolate``) matches them. Fisher files are
safetensors (:func:`save_fisher`, :func:`load_fisher`) whose metadata says how F was made.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from flipless.errors import FileFormatError, InputError, MissingFileError

FISHER_FORMAT = "flipless.fisher"
LABEL_RULES = ("predicted", "true")
#: The name prefix of a model wrapped as ``.model`` (HFLogits, LabelSpaceModel, …).
WRAPPER_PREFIX = "model."
LabelRule = Literal["predicted", "true"]


class FisherDiagonal(dict[str, torch.Tensor]):
    """Parameter name → diagonal Fisher information (mean 1 over all entries), and its record.

    A dict, so it goes wherever a state dict goes (``interpolate(..., fisher=F)``); the
    attributes say how it was computed: ``label`` ("predicted" or "true"), ``samples`` (how
    many examples; None when unknown) and ``method`` ("per-example", exact, "batched", the
    approximation, or "unknown").
    """

    def __init__(
        self,
        tensors: Mapping[str, torch.Tensor],
        *,
        label: str,
        samples: int | None,
        method: str,
    ) -> None:
        super().__init__(tensors)
        self.label = label
        self.samples = samples
        self.method = method

    def record(self) -> dict[str, str]:
        """The record as the string metadata a safetensors file holds."""
        return {
            "format": FISHER_FORMAT,
            "label": self.label,
            "samples": "unknown" if self.samples is None else str(self.samples),
            "method": self.method,
            "normalisation": "divided by the mean over all parameter entries",
        }


def dict_batches(data: Any, batch_size: int, where: str) -> Iterator[Mapping[str, Any]]:
    """Dict batches with at least ``"inputs"`` from a Dataset of dict items or an iterable.

    A ``torch.utils.data.Dataset`` (e.g. ``LabeledData``) is read in order with a
    ``DataLoader`` of ``batch_size``; anything else iterable (a ``DataLoader``) is used as
    it is, its own batch size applying.
    """
    if isinstance(data, Dataset):
        batches: Iterable[Any] = DataLoader(data, batch_size=batch_size, shuffle=False)
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
        batches = data
    else:
        raise InputError(
            f"{where}: data is a {type(data).__name__}; expected a Dataset of dict items "
            "(e.g. flipless LabeledData) or a DataLoader yielding dict batches."
        )
    for batch in batches:
        if not isinstance(batch, Mapping) or "inputs" not in batch:
            got = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise InputError(
                f"{where}: a batch is {got}; expected a dict with 'inputs' (and 'labels' where "
                "true labels are used), as LabeledData's items collate to."
            )
        yield batch


@contextmanager
def kept_modes(model: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval mode on leaving, however the block ends."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts) moved to ``device``; anything else (texts) as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {key: to_device(item, device) for key, item in value.items()}
    return value


def _count(inputs: Any) -> int:
    if isinstance(inputs, Mapping):
        return _count(next(iter(inputs.values())))
    return int(inputs.shape[0]) if isinstance(inputs, torch.Tensor) else len(inputs)


def _take(inputs: Any, start: int, stop: int) -> Any:
    if isinstance(inputs, Mapping):
        return {key: _take(value, start, stop) for key, value in inputs.items()}
    return inputs[start:stop]


def _logits(output: Any) -> torch.Tensor:
    """The logits [N, C] of a model's output: a tensor, ``.logits``, or a tuple's first."""
    if hasattr(output, "logits"):
        output = output.logits
    elif isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(
            f"fisher_diagonal needs a classifier returning logits [N, C] (a tensor, an output "
            f"with .logits, or a tuple starting with them); got {got}."
        )
    return output


def _check_settings(label: Any, batch_size: Any, max_samples: Any) -> tuple[str, int, int | None]:
    if label not in LABEL_RULES:
        raise InputError(
            f"label={label!r}; expected 'predicted' (the model's own prediction, no gold labels "
            "needed) or 'true' (the batch's 'labels')."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r}; expected a whole number ≥ 1.")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise InputError(f"max_samples={max_samples!r}; expected None or a whole number ≥ 1.")
    return label, batch_size, max_samples


def fisher_diagonal(
    model: nn.Module,
    data: Any,
    label: LabelRule = "predicted",
    *,
    batch_size: int = 64,
    per_example: bool = True,
    max_samples: int | None = None,
    device: str | torch.device | None = None,
) -> FisherDiagonal:
    """The diagonal Fisher information of ``model`` on ``data``, normalised to mean 1.

    See the module docstring for the formula and the two methods. ``data``: a Dataset of dict
    items (``LabeledData``) or a DataLoader of dict batches (``"inputs"``; ``"labels"`` for
    ``label="true"``), read in order; ``max_samples`` stops after that many examples.
    ``device``: where to compute (default: the model's); the model itself is not moved.

    Returns one float tensor per trainable parameter (frozen ones are left out), on the CPU,
    in the parameter's dtype (float32 at least); tied parameters appear under each of their
    names, and count once in the mean. Sums are accumulated in float64.
    """
    label, batch_size, max_samples = _check_settings(label, batch_size, max_samples)
    if not isinstance(model, nn.Module):
        raise InputError(f"model is a {type(model).__name__}; expected an nn.Module.")
    named = dict(model.named_parameters())
    trainable = [name for name, p in named.items() if p.requires_grad]
    if not trainable:
        raise InputError("the model has no trainable parameters (requires_grad); no Fisher.")
    if device is None:
        device = next(iter(named.values())).device
    device = torch.device(device)
    params = {name: named[name].detach().to(device) for name in trainable}
    constants = {name: p.detach().to(device) for name, p in named.items() if not p.requires_grad}
    constants.update({name: b.to(device) for name, b in model.named_buffers()})
    sums = {
        name: torch.zeros(p.shape, dtype=torch.float64, device=device) for name, p in params.items()
    }
    pass_ = _FisherPass(model, params, constants, sums)
    seen = 0
    with kept_modes(model):
        model.eval()
        for batch in dict_batches(data, batch_size, "fisher_diagonal"):
            inputs = to_device(batch["inputs"], device)
            size = _count(inputs)
            if max_samples is not None and seen + size > max_samples:
                size = max_samples - seen
                inputs = _take(inputs, 0, size)
            if size == 0:
                continue  # an empty batch
            targets = pass_.targets(inputs, batch, label, size)
            if not per_example:
                pass_.add_batch_sum(inputs, targets)
            else:
                pass_.add_per_example(inputs, targets)
            seen += size
            if max_samples is not None and seen >= max_samples:
                break
    if seen == 0:
        raise InputError("fisher_diagonal: the data holds no examples; nothing to average.")
    total = sum(float(s.sum()) for s in sums.values())
    entries = sum(s.numel() for s in sums.values())
    if not total > 0 or total == float("inf"):
        raise InputError(
            f"the squared gradients sum to {total} over {seen} examples; F cannot be normalised "
            "to mean 1. Check that the model's outputs depend on its parameters and are finite."
        )
    mean = total / entries
    primary_of = {id(named[name]): name for name in trainable}
    fisher = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        primary = primary_of.get(id(parameter))
        if primary is not None:
            dtype = torch.promote_types(parameter.dtype, torch.float32)
            fisher[name] = (sums[primary] / mean).to("cpu", dtype)
    method = "per-example" if per_example else "batched"
    return FisherDiagonal(fisher, label=label, samples=seen, method=method)


class _FisherPass:
    """Accumulates squared log-likelihood gradients into ``sums`` (float64)."""

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        constants: dict[str, torch.Tensor],
        sums: dict[str, torch.Tensor],
    ) -> None:
        self.model = model
        self.params = params
        self.constants = constants
        self.sums = sums
        self.use_vmap = True
        self._keywords: frozenset[str] | None = None

    def _log_probs(self, params: Mapping[str, torch.Tensor], inputs: Any) -> torch.Tensor:
        state = (dict(params), self.constants)
        if self.keyword_inputs(inputs):
            output = torch.func.functional_call(self.model, state, (), dict(inputs))
        else:
            output = torch.func.functional_call(self.model, state, (inputs,))
        return torch.log_softmax(_logits(output), dim=-1)

    def keyword_inputs(self, inputs: Any) -> bool:
        """Whether dict inputs are the model's keyword arguments (a transformers model's
        ``input_ids``, ``attention_mask``, …) rather than its one argument."""
        if not isinstance(inputs, Mapping):
            return False
        if self._keywords is None:
            self._keywords = frozenset(inspect.signature(self.model.forward).parameters)
        return bool(inputs) and all(key in self._keywords for key in inputs)

    def targets(self, inputs: Any, batch: Mapping[str, Any], label: str, size: int) -> torch.Tensor:
        """The label each example's log-likelihood is taken at: predicted or true."""
        if label == "predicted":
            with torch.no_grad():
                return self._log_probs(self.params, inputs).argmax(dim=-1)
        if "labels" not in batch:
            raise InputError(
                "label='true' needs the batches' 'labels'; the data has none. Use "
                "label='predicted' (no gold labels needed)."
            )
        labels = torch.as_tensor(batch["labels"])[:size]
        return labels.to(device=next(iter(self.sums.values())).device, dtype=torch.long)

    def _add(self, name: str, squares: torch.Tensor) -> None:
        self.sums[name] += squares.to(torch.float64)

    def _leaves(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().requires_grad_(True) for name, p in self.params.items()}

    def _backward_add(self, objective: torch.Tensor, leaves: dict[str, torch.Tensor]) -> None:
        grads = torch.autograd.grad(objective, list(leaves.values()), allow_unused=True)
        for name, grad in zip(leaves, grads, strict=True):
            if grad is not None:
                self._add(name, grad.float().square() if grad.element_size() < 4 else grad.square())

    def add_batch_sum(self, inputs: Any, targets: torch.Tensor) -> None:
        """The approximation: (∂ Σ_i log p(y_i | x_i) / ∂θ)² for the whole batch."""
        leaves = self._leaves()
        with torch.enable_grad():
            log_probs = self._log_probs(leaves, inputs)
            objective = log_probs.gather(1, targets[:, None]).sum()
            self._backward_add(objective, leaves)

    def add_per_example(self, inputs: Any, targets: torch.Tensor) -> None:
        """Σ_i (∂ log p(y_i | x_i) / ∂θ)², vectorised where the model allows, else a loop."""
        if self.use_vmap and (isinstance(inputs, (torch.Tensor, Mapping))):
            try:
                grads = torch.func.vmap(torch.func.grad(self._one_log_prob), in_dims=(None, 0, 0))(
                    self.params, inputs, targets
                )
            except RuntimeError:
                self.use_vmap = False  # e.g. .item() or data-dependent control flow
            else:
                for name, grad in grads.items():
                    grad = grad.float() if grad.element_size() < 4 else grad
                    self._add(name, grad.square().sum(dim=0))
                return
        leaves = self._leaves()
        for index in range(targets.shape[0]):
            with torch.enable_grad():
                log_probs = self._log_probs(leaves, _take(inputs, index, index + 1))
                self._backward_add(log_probs[0, targets[index]], leaves)

    def _one_log_prob(
        self, params: dict[str, torch.Tensor], inputs: Any, target: torch.Tensor
    ) -> torch.Tensor:
        """log p(target | one example), the example given without its batch dimension."""
        batch = torch.utils._pytree.tree_map(lambda t: t.unsqueeze(0), inputs)
        log_probs = self._log_probs(params, batch)
        return log_probs[0].gather(0, target.reshape(1))[0]


def align_fisher_names(
    fisher: Mapping[str, torch.Tensor], names: Iterable[str]
) -> Mapping[str, torch.Tensor]:
    """``fisher`` with its names matched to a model's tensor ``names`` across a wrapper's prefix.

    A Fisher of ``HFLogits(model)`` (or of flipless's other wrappers, which hold the wrapped
    model as ``.model``) names ``model.bert.…`` what ``model.state_dict()`` and a
    ``save_pretrained`` folder name ``bert.…``, and the other way round. When the names are
    not all the model's but all become so by removing, or by adding, the leading ``model.``,
    the renamed mapping is returned (a :class:`FisherDiagonal` keeps its record); else
    ``fisher`` unchanged (``interpolate`` then reports the names that do not fit).
    """
    known = set(names)
    keys = list(fisher)
    prefix = WRAPPER_PREFIX
    if not keys or all(key in known for key in keys):
        return fisher
    if all(key.startswith(prefix) and key[len(prefix) :] in known for key in keys):
        renaming = {key: key[len(prefix) :] for key in keys}
    elif all(prefix + key in known for key in keys):
        renaming = {key: prefix + key for key in keys}
    else:
        return fisher
    renamed = {renaming[key]: value for key, value in fisher.items()}
    if isinstance(fisher, FisherDiagonal):
        return FisherDiagonal(
            renamed, label=fisher.label, samples=fisher.samples, method=fisher.method
        )
    return renamed


def save_fisher(
    fisher: Mapping[str, torch.Tensor], path: str | os.PathLike[str], label: str | None = None
) -> Path:
    """Write a Fisher to a safetensors file, atomically; returns the path.

    The metadata records ``format`` (``flipless.fisher``), the ``label`` rule, ``samples``
    and ``method``; they come from a :class:`FisherDiagonal`, or, for a plain mapping,
    ``label`` must be given (samples and method are then recorded as "unknown").
    """
    from safetensors.torch import save_file

    if isinstance(fisher, FisherDiagonal):
        if label is not None and label != fisher.label:
            raise InputError(
                f"label={label!r} but this Fisher was computed with label={fisher.label!r}; "
                "leave label out."
            )
        record = fisher.record()
    else:
        if label not in LABEL_RULES:
            raise InputError(
                f"label={label!r}; a plain mapping needs the label rule it was computed with, "
                "'predicted' or 'true' (a FisherDiagonal carries its own)."
            )
        record = FisherDiagonal({}, label=label, samples=None, method="unknown").record()
    tensors = {name: _checked_fisher(name, value, "the Fisher") for name, value in fisher.items()}
    if not tensors:
        raise InputError("the Fisher holds no tensors; nothing to save.")
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot save {path}: the folder {path.parent} does not exist.")
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(
            {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()},
            temporary,
            metadata=record,
        )
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _checked_fisher(name: str, value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
        raise InputError(f"{where}: {name!r} is {kind}; expected a floating tensor.")
    if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
        raise InputError(f"{where}: {name!r} holds negative, NaN or infinite values; F ≥ 0.")
    return value


def load_fisher(path: str | os.PathLike[str]) -> FisherDiagonal:
    """Read a Fisher written by :func:`save_fisher` (its values checked: finite, ≥ 0)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no Fisher file at {path}; write one with save_fisher.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            record = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:
        raise FileFormatError(f"cannot read {path} as a safetensors file ({exc}).") from exc
    if record.get("format") != FISHER_FORMAT or record.get("label") not in LABEL_RULES:
        raise FileFormatError(
            f"{path} is not a flipless Fisher file: its metadata has format="
            f"{record.get('format')!r} and label={record.get('label')!r}, expected "
            f"{FISHER_FORMAT!r} and one of {LABEL_RULES}. Write it with save_fisher."
        )
    try:
        checked = {name: _checked_fisher(name, t, str(path)) for name, t in tensors.items()}
    except InputError as exc:
        raise FileFormatError(str(exc)) from exc
    samples = record.get("samples", "unknown")
    return FisherDiagonal(
        checked,
        label=record["label"],
        samples=int(samples) if samples.isdigit() else None,
        method=record.get("method", "unknown"),
    )
