"""The arithmetic of one tensor: backward-compatible weight interpolation (METHODS.md §3).

With ``old_weight`` α weighting the **old** model and a soup of M new models,

    θ(α) = α θ_old + (1 − α) θ̄_new,        θ̄_new = Σ_m s_m θ_new^(m)   (Σ s_m = 1; uniform 1/M)

and the Fisher-weighted variant, element-wise with F the old model's diagonal Fisher
information (normalised to mean 1),

    θ(α) = (α F ⊙ θ_old + (1 − α) θ̄_new) / (α F + (1 − α)),    0/0 (α = 1, F = 0) → θ_old.

Sums are computed in float32 (float64 when an input is float64) and the result has the old
tensor's dtype, so half-precision checkpoints stay half precision without rounding each step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from flipless.errors import InputError, MismatchError


def check_old_weight(old_weight: float, name: str = "old_weight") -> float:
    """α as a float in [0, 1], or an InputError."""
    value = float(old_weight)
    if not 0.0 <= value <= 1.0:
        raise InputError(
            f"{name}={old_weight}; expected a weight of the old model in [0, 1] "
            "(0 gives the new model, 1 the old one)."
        )
    return value


def soup_weights(count: int, weights: Sequence[float] | None = None) -> list[float]:
    """The soup's weights s_m: uniform when None, else normalised to sum 1 (all ≥ 0)."""
    if count < 1:
        raise InputError("a soup needs at least one new model.")
    if weights is None:
        return [1.0 / count] * count
    values = [float(w) for w in weights]
    if len(values) != count:
        raise InputError(f"got {len(values)} soup weights for {count} new models; give one each.")
    if any(not w >= 0 for w in values) or sum(values) <= 0:
        raise InputError(f"soup weights must be ≥ 0 and not all 0; got {values}.")
    total = sum(values)
    return [w / total for w in values]


def _working_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def merge_tensor(
    old: torch.Tensor,
    news: Sequence[torch.Tensor],
    old_weight: float,
    *,
    weights: Sequence[float] | None = None,
    fisher: torch.Tensor | None = None,
    name: str = "tensor",
) -> torch.Tensor:
    """θ(α) for one floating-point tensor; see the module docstring.

    Raises when shapes or dtypes differ, a value is NaN or infinite, or α is outside [0, 1].
    """
    alpha = check_old_weight(old_weight)
    if not news:
        raise InputError(f"{name}: no new tensor to interpolate with.")
    if not old.is_floating_point():
        raise InputError(f"{name}: {old.dtype} is not a floating-point tensor; only those merge.")
    for index, new in enumerate(news):
        if new.shape != old.shape:
            raise MismatchError(
                f"{name}: old shape {tuple(old.shape)} but new model {index} has "
                f"{tuple(new.shape)}; the models must have the same architecture."
            )
        if new.dtype != old.dtype:
            raise MismatchError(
                f"{name}: old dtype {old.dtype} but new model {index} has {new.dtype}; convert "
                "one checkpoint so both match (the result keeps the old dtype)."
            )
    shares = soup_weights(len(news), weights)
    work = _working_dtype(old, *news)
    # memory: one working copy of the soup mean and the result, updated in place (a tensor of
    # a multi-gigabyte checkpoint may itself be large); finiteness is checked on the result,
    # where any NaN or inf of an input shows, and the culprit is looked up only then
    if len(news) == 1:
        mean_new = news[0].to(work)
    else:
        mean_new = news[0].to(work) * shares[0]
        for share, new in zip(shares[1:], news[1:], strict=True):
            mean_new.add_(new.to(work), alpha=share)
    old_work = old.to(work)
    if fisher is None:
        merged = torch.lerp(mean_new, old_work, alpha)  # (1 − α) θ̄_new + α θ_old, fused
    else:
        if fisher.shape != old.shape:
            raise MismatchError(
                f"{name}: Fisher shape {tuple(fisher.shape)} differs from the tensor's "
                f"{tuple(old.shape)}."
            )
        information = fisher.to(work)
        if bool((information < 0).any()) or not bool(torch.isfinite(information).all()):
            raise InputError(f"{name}: the Fisher information must be finite and ≥ 0.")
        weighted = alpha * information
        numerator = weighted * old_work
        numerator.add_(mean_new, alpha=1.0 - alpha)
        denominator = weighted.add_(1.0 - alpha)
        empty = denominator == 0  # α = 1 and F = 0: nothing to weigh, keep θ_old
        merged = torch.where(empty, old_work, numerator.div_(denominator.masked_fill_(empty, 1.0)))
    if not _all_finite(merged):
        _raise_not_finite(name, [old, *news])
    return merged.to(old.dtype)


def _all_finite(tensor: torch.Tensor, chunk: int = 1 << 20) -> bool:
    """No NaN or inf, checked a million elements at a time (small temporaries)."""
    return all(bool(torch.isfinite(part).all()) for part in tensor.reshape(-1).split(chunk))


def _raise_not_finite(name: str, tensors: Sequence[torch.Tensor]) -> None:
    for index, tensor in enumerate(tensors):
        if not _all_finite(tensor):
            which = "the old model" if index == 0 else f"new model {index - 1}"
            raise InputError(f"{name}: {which} holds NaN or infinite values; fix the checkpoint.")
    raise InputError(f"{name}: the interpolation overflowed; compute in float64.")
