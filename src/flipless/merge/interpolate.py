"""Backward-compatible weight interpolation (BCWI) of whole models (METHODS.md §3).

With α the old-weight of a tensor (from a :class:`~flipless.merge.policy.MergePolicy`),

    θ(α) = α θ_old + (1 − α) θ̄_new,        θ̄_new = Σ_m s_m θ_new^(m)   (a soup; s_m = 1/M)

or, given the old model's diagonal Fisher information F (:func:`~flipless.merge.fisher.fisher_diagonal`),
element-wise θ(α) = (α F θ_old + (1 − α) θ̄_new) / (α F + (1 − α)), with 0/0 → θ_old
(:func:`~flipless.merge.tensors.merge_tensor` does the arithmetic). Floating tensors without
a Fisher entry (BatchNorm statistics and other buffers, frozen parameters) are interpolated
plainly, which is the Fisher form with F = 1. Integer buffers are copied from one side and
new-class classifier rows from θ̄_new, as the policy says. Reference: "Backward Compatibility
During Data Updates by Weight Interpolation" (Schumann et al., 2023).

After interpolating a network with BatchNorm, re-estimate its running statistics on data
(:func:`~flipless.merge.batchnorm.reestimate_batchnorm`): the interpolated statistics are
not those of the interpolated network.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from flipless.errors import InputError, MismatchError
from flipless.merge.fisher import align_fisher_names
from flipless.merge.policy import MergePolicy
from flipless.merge.sources import TensorSource, open_source
from flipless.merge.tensors import merge_tensor, soup_weights
from flipless.validation import first_few


def _kind(tensor: torch.Tensor, name: str) -> str:
    if tensor.is_complex():
        raise InputError(
            f"{name}: complex tensors ({tensor.dtype}) are not interpolated; only real "
            "floating-point tensors merge, and integer buffers are copied."
        )
    return "floating" if tensor.is_floating_point() else "integer"


def merge_tensors(
    name: str,
    old_tensor: torch.Tensor,
    new_tensors: Sequence[torch.Tensor],
    policy: MergePolicy,
    *,
    old_weight: float,
    fisher: torch.Tensor | None = None,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """One tensor of the merged model, by the policy; the unit a streaming writer calls.

    * A floating tensor is θ(α) with α = ``old_weight`` (the tensor's own, from
      ``policy.old_weights(all names)[name]``), Fisher-weighted when ``fisher`` is given, over
      the soup of ``new_tensors`` with soup ``weights`` (uniform when None).
    * When ``name`` is in ``policy.new_class_rows`` those rows (along dim 0) are θ̄_new.
    * A non-floating tensor is a copy of the old one (``policy.integer_buffers == "old"``) or
      of the first new one ("new"); all must agree in shape and dtype.

    New and Fisher tensors are moved to the old tensor's device; the result has the old
    tensor's dtype and device and never shares memory with an input.
    """
    if not new_tensors:
        raise InputError(f"{name}: no new tensor to interpolate with.")
    news = [new.to(old_tensor.device) for new in new_tensors]
    kinds = {_kind(tensor, name) for tensor in [old_tensor, *news]}
    if len(kinds) > 1 or "integer" in kinds:
        for index, new in enumerate(news):
            if new.shape != old_tensor.shape or new.dtype != old_tensor.dtype:
                raise MismatchError(
                    f"{name}: the old model has {old_tensor.dtype} {tuple(old_tensor.shape)} "
                    f"but new model {index} has {new.dtype} {tuple(new.shape)}; the models "
                    "must have the same architecture and dtypes."
                )
        keep = old_tensor if policy.integer_buffers == "old" else news[0]
        return keep.clone()
    rows = policy.new_class_rows.get(name)
    if rows is not None:
        for index, new in enumerate(news):
            if new.shape != old_tensor.shape:
                raise MismatchError(
                    f"{name}: new-class rows are copied between tensors of one shape, but the "
                    f"old model has {tuple(old_tensor.shape)} and new model {index} "
                    f"{tuple(new.shape)}. Build the old model with the full (new) label space, "
                    "its rows of unseen classes untrained, before interpolating."
                )
        size = old_tensor.shape[0] if old_tensor.ndim else 0
        outside = [row for row in rows if row >= size]
        if outside:
            raise InputError(
                f"{name}: new_class_rows {first_few(outside)} are outside the tensor's "
                f"{size} rows (shape {tuple(old_tensor.shape)}); expected class indices "
                f"in [0, {size})."
            )
    if fisher is not None:
        fisher = fisher.to(old_tensor.device)
    merged = merge_tensor(old_tensor, news, old_weight, weights=weights, fisher=fisher, name=name)
    if rows:
        soup_mean = merge_tensor(old_tensor, news, 0.0, weights=weights, name=name)
        index = torch.tensor(rows, dtype=torch.long, device=merged.device)
        merged[index] = soup_mean[index]
    return merged


def _difference(names: list[str], reference: set[str]) -> list[str]:
    return [name for name in names if name not in reference]


def check_sources(
    old: TensorSource, news: Sequence[TensorSource], fisher: TensorSource | None = None
) -> None:
    """Raise unless every new model (and the Fisher) fits the old one, reading no tensor.

    The new models must hold exactly the old model's tensor names, with the same shapes and
    dtypes; the Fisher tensors must be floating, named like the old model's tensors, with the
    same shapes (it may leave tensors out). Messages list the first few offenders and counts.
    """
    names = old.keys()
    known = set(names)
    for index, new in enumerate(news):
        which = "the new model" if len(news) == 1 else f"new model {index}"
        missing = _difference(names, set(new.keys()))
        extra = _difference(new.keys(), known)
        if missing or extra:
            parts = []
            if missing:
                parts.append(
                    f"{len(missing)} of the old model's tensors missing ({first_few(missing)})"
                )
            if extra:
                parts.append(f"{len(extra)} tensors the old model lacks ({first_few(extra)})")
            raise MismatchError(
                f"{which} ({new.origin}) does not have the old model's tensors (different "
                f"architectures?): {'; '.join(parts)}. Interpolate checkpoints of one "
                "architecture, both saved the same way (state_dict or save_pretrained)."
            )
        differ = [
            f"{name}: {old.dtype(name)} {old.shape(name)} vs {new.dtype(name)} {new.shape(name)}"
            for name in names
            if old.shape(name) != new.shape(name) or old.dtype(name) != new.dtype(name)
        ]
        widened = [name for name in names if _more_rows(old, new, name)]
        if widened and len(widened) == len(differ):
            raise MismatchError(_more_classes_message(which, old, new, widened, differ))
        if differ:
            raise MismatchError(
                f"{which} ({new.origin}) differs from the old model in {len(differ)} tensor "
                f"shape(s) or dtype(s) (different architectures, or a converted checkpoint?): "
                f"{first_few(differ, 3)}. Convert both to one dtype (e.g. model.float()) and "
                "build both from one configuration."
            )
    if fisher is None:
        return
    extra = _difference(fisher.keys(), known)
    if extra:
        raise MismatchError(
            f"the Fisher information ({fisher.origin}) has {len(extra)} tensors the models lack "
            f"({first_few(extra)}); was it computed for another model?"
        )
    bad = [
        f"{name}: {fisher.dtype(name)} {fisher.shape(name)}"
        for name in fisher
        if fisher.shape(name) != old.shape(name) or not fisher.dtype(name).is_floating_point
    ]
    if bad:
        raise MismatchError(
            f"the Fisher information ({fisher.origin}) has {len(bad)} tensor(s) that are not "
            f"floating or not of the model's shape: {first_few(bad, 3)}."
        )


def _more_rows(old: TensorSource, new: TensorSource, name: str) -> bool:
    """Whether the new tensor only has more rows (a classifier of more classes)."""
    old_shape, new_shape = tuple(old.shape(name)), tuple(new.shape(name))
    return (
        old.dtype(name) == new.dtype(name)
        and len(old_shape) == len(new_shape) >= 1
        and old_shape[1:] == new_shape[1:]
        and new_shape[0] > old_shape[0]
    )


def _more_classes_message(
    which: str, old: TensorSource, new: TensorSource, names: list[str], shapes: list[str]
) -> str:
    """What to do when the new model's classifier has rows for classes the old one lacks."""
    first = names[0]
    old_rows, new_rows = old.shape(first)[0], new.shape(first)[0]
    rows = f"{old_rows}-{new_rows - 1}" if new_rows - old_rows > 1 else str(old_rows)
    options = " ".join(f"--new-class-rows {name}={rows}" for name in names)
    python = ", ".join(f"'{name}': range({old_rows}, {new_rows})" for name in names)
    return (
        f"{which} ({new.origin}) has a classifier for more classes than the old model: "
        f"{first_few(names)} have {old_rows} rows in the old model and {new_rows} in the new "
        f"one ({first_few(shapes, 3)}). Rows of classes the old model never had are copied from the new model, not "
        f"interpolated: widen the old model's head to the new label space first (its rows for "
        f"the new classes untrained; in Python flipless.models.sources.start_from_old(old, "
        f"new_class_names, old_class_names), then save_model), and name those rows with "
        f"--new-class-rows, e.g. {options} when the new classes come last (in Python "
        f"MergePolicy(old_weight, new_class_rows={{{python}}}))."
    )


def _as_policy(old_weight: float | None, policy: MergePolicy | None) -> MergePolicy:
    if (old_weight is None) == (policy is None):
        raise InputError(
            "give either old_weight (one α for every tensor) or policy (a MergePolicy, which "
            "holds its own old_weight), not both and not neither."
        )
    if policy is None:
        return MergePolicy(old_weight=old_weight)  # type: ignore[arg-type]
    if not isinstance(policy, MergePolicy):
        raise InputError(f"policy is a {type(policy).__name__}; expected a MergePolicy.")
    return policy


def interpolate(
    old: Any,
    new: Any,
    old_weight: float | None = None,
    *,
    policy: MergePolicy | None = None,
    weights: Sequence[float] | None = None,
    fisher: Any = None,
    model: nn.Module | None = None,
) -> dict[str, torch.Tensor] | nn.Module:
    """Interpolate the old model towards the new one(s): θ = α θ_old + (1 − α) θ̄_new.

    Args:
        old: the old model: an ``nn.Module``, a state dict, a safetensors file, a sharded
            index, a Hugging Face model folder or a ``.pt`` state dict (see
            :func:`~flipless.merge.sources.open_source`).
        new: one new model in any of those forms, or a list of them (a soup).
        old_weight: α for every tensor, in [0, 1] (0 gives the new model, 1 the old one).
        policy: instead of ``old_weight``, a :class:`MergePolicy` (per-tensor α, integer
            buffers, new-class rows). Give exactly one of the two.
        weights: the soup weights s_m (normalised to sum 1); uniform when None.
        fisher: the old model's diagonal Fisher information (a dict from
            :func:`~flipless.merge.fisher.fisher_diagonal`, or a file from
            :func:`~flipless.merge.fisher.save_fisher`): Fisher-weighted interpolation.
        model: a module to load the result into (strictly; in place), e.g. the architecture
            built empty when ``old`` and ``new`` are files.

    Returns:
        ``model`` with the merged weights loaded, when given; else, when ``old`` is an
        ``nn.Module``, a deep copy of it (same mode and device) with the merged weights
        loaded (``old`` is unchanged); else a dict name → tensor in the old source's order,
        each tensor new, with the old tensor's dtype.

    Raises MismatchError when the models' tensor names, shapes or dtypes differ, InputError
    for α outside [0, 1], NaN or infinite values, or a bad policy.
    """
    policy = _as_policy(old_weight, policy)
    if model is not None and not isinstance(model, nn.Module):
        raise InputError(f"model is a {type(model).__name__}; expected an nn.Module or None.")
    new_list = list(new) if isinstance(new, (list, tuple)) else [new]
    if not new_list:
        raise InputError("new is an empty list; give at least one new model.")
    soup_weights(len(new_list), weights)  # fail before any work
    with ExitStack() as stack:

        def opened(source: Any) -> TensorSource:
            if isinstance(source, TensorSource):
                return source
            return stack.enter_context(open_source(source))

        old_source = opened(old)
        new_sources = [opened(item) for item in new_list]
        if isinstance(fisher, Mapping):  # e.g. computed on HFLogits(model): names "model.…"
            fisher = align_fisher_names(fisher, old_source.keys())
        fisher_source = None if fisher is None else opened(fisher)
        check_sources(old_source, new_sources, fisher_source)
        names = old_source.keys()
        policy.check_names(names)
        alphas = policy.old_weights(names)
        merged = {
            name: merge_tensors(
                name,
                old_source.get(name),
                [source.get(name) for source in new_sources],
                policy,
                old_weight=alphas[name],
                fisher=(
                    fisher_source.get(name)
                    if fisher_source is not None and name in fisher_source
                    else None
                ),
                weights=weights,
            )
            for name in names
        }
    if model is not None:
        return load_merged(model, merged)
    if isinstance(old, nn.Module):
        return load_merged(copy.deepcopy(old), merged)
    return merged


def load_merged(module: nn.Module, merged: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load ``merged`` into ``module`` strictly and return it.

    Strict, except that a tied alias (a name whose tensor is the same object as a loaded
    one's, e.g. a decoder tied to the embeddings, which ``save_pretrained`` leaves out) may be
    missing. Values are copied into the module's own tensors (its dtype and device).
    """
    try:
        result = module.load_state_dict(dict(merged), strict=False)
    except RuntimeError as exc:
        raise MismatchError(
            f"the merged weights do not fit the {type(module).__name__}: {exc}"
        ) from exc
    state = module.state_dict(keep_vars=True)
    loaded = {id(state[name]) for name in merged if name in state}
    missing = [name for name in result.missing_keys if id(state[name]) not in loaded]
    unexpected = result.unexpected_keys
    if missing or unexpected:
        parts = [f"{len(missing)} of its tensors missing ({first_few(missing)})"] if missing else []
        if unexpected:
            parts.append(f"{len(unexpected)} it does not have ({first_few(unexpected)})")
        raise MismatchError(
            f"the merged weights do not fit the {type(module).__name__} (different "
            f"architectures?): {'; '.join(parts)}."
        )
    return module
