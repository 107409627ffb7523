"""Soft-masking: protect what earlier tasks need while fine-tuning on a new one.

After Ke et al. (Findings of EMNLP 2023): with importance m ∈ [0, 1] per weight (or per output
unit) from :func:`~flipless.continual.importance.compute_importance`, each masked weight may
change only by the share ``1 − m``:

* ``mode="gradient"``: the weight gradient is multiplied by ``1 − m`` (per row for unit
  importance, the row's bias gradient too) once per optimizer step, after gradients are
  unscaled and clipped, so gradient accumulation masks each micro-batch exactly once. With
  plain SGD this scales the step; Adam/AdamW normalise a constant rescale away, and weight
  decay still moves masked weights: only ``m = 1`` (a zero gradient) is then respected, and
  only without decoupled weight decay.
* ``mode="update"`` (optimizer-aware): the masked parameters are copied before the step and
  afterwards blended, ``θ ← θ_before + (1 − m) ⊙ (θ_after − θ_before)``, whatever the
  optimizer did (momentum, Adam's normalisation, weight decay).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from rich.table import Table
from torch import nn

from flipless.continual.subnetwork import PopupLinear
from flipless.errors import InputError, MismatchError
from flipless.train.hooks import Hook

MODES = ("gradient", "update")


class SoftMask(Hook):
    """A training-loop hook that soft-masks the layers named in ``importance``.

    Args:
        importance: layer name (as in ``model.named_modules()``) → importance in [0, 1], of the
            weight's shape ("parameter") or ``[out]`` ("unit"; the bias row is masked too).
        mode: "gradient" or "update" (see the module docstring).

    ``steps`` counts the optimizer steps masked so far; it is the only checkpointed state.
    """

    def __init__(self, importance: Mapping[str, torch.Tensor], mode: str = "gradient") -> None:
        if mode not in MODES:
            raise InputError(f"mode={mode!r}; expected one of {MODES}.")
        if not isinstance(importance, Mapping) or not importance:
            raise InputError("importance is empty or not a mapping; expected {layer: tensor}.")
        for name, values in importance.items():
            if not isinstance(values, torch.Tensor) or not values.is_floating_point():
                raise InputError(f"importance of {name!r} is not a floating tensor.")
            if values.numel() and not bool(((values >= 0) & (values <= 1)).all()):
                raise InputError(
                    f"importance of {name!r} has values in [{values.min().item():g}, "
                    f"{values.max().item():g}]; expected [0, 1] (compute_importance gives that)."
                )
        self.importance = {name: values.detach() for name, values in importance.items()}
        self.mode = mode
        self.steps = 0
        self._factors: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._before: list[torch.Tensor] | None = None
        self._handle: Any = None

    def bind(self, model: nn.Module) -> None:
        """Find the masked parameters of ``model``: each layer's weight (and, for unit
        importance, its bias), or the active task's scores of a
        :class:`~flipless.continual.subnetwork.PopupLinear` layer."""
        modules = dict(model.named_modules())
        missing = sorted(set(self.importance) - set(modules))
        if missing:
            raise MismatchError(
                f"importance names layers {missing[:5]} that {type(model).__name__} does not "
                f"have; expected names from model.named_modules() such as {list(modules)[1:6]}."
            )
        factors = []
        for name, values in self.importance.items():
            module = modules[name]
            if isinstance(module, PopupLinear):
                weight, bias = module.active_scores, None
            else:
                weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
            if not isinstance(weight, torch.Tensor):
                raise MismatchError(f"layer {name!r} has no weight to mask.")
            keep = (1 - values).to(device=weight.device, dtype=weight.dtype)
            if values.shape == weight.shape:
                factors.append((weight, keep))
            elif weight.ndim >= 1 and values.shape == weight.shape[:1]:
                factors.append((weight, keep.reshape(-1, *[1] * (weight.ndim - 1))))
                if isinstance(bias, torch.Tensor) and bias.shape == values.shape:
                    factors.append((bias, keep))
            else:
                raise MismatchError(
                    f"importance of {name!r} has shape {tuple(values.shape)}; expected the "
                    f"weight's {tuple(weight.shape)} or its rows' ({weight.shape[0]},)."
                )
        self._factors = factors

    def keep_factors(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """``(parameter, 1 − importance broadcastable to it)`` pairs, once bound to a model."""
        return list(self._factors)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Update mode: blend the masked parameters after every step ``optimizer`` really takes
        (a step a gradient scaler skips calls no hook, so nothing is blended or counted)."""
        self.remove()
        if self.mode == "update":
            self._handle = optimizer.register_step_post_hook(self._after_step)

    def on_fit_start(self, trainer: Any) -> None:
        """Bind to ``trainer.model``; in update mode hook ``trainer.optimizer`` (once)."""
        self.bind(trainer.model)
        self.attach(trainer.optimizer)

    def before_optimizer_step(self, trainer: Any = None) -> None:
        """Mask the gradients (gradient mode) or remember the parameters (update mode). Call it
        once per optimizer step, after unscaling and clipping."""
        if not self._factors:
            raise InputError("SoftMask is not bound to a model; call bind(model) first.")
        if self.mode == "gradient":
            with torch.no_grad():
                for parameter, keep in self._factors:
                    if parameter.grad is not None:
                        parameter.grad.mul_(keep)
            self.steps += 1
        else:
            self._before = [parameter.detach().clone() for parameter, _ in self._factors]

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._before is None:
            return
        with torch.no_grad():
            for (parameter, keep), before in zip(self._factors, self._before, strict=True):
                parameter.copy_(before + keep * (parameter - before))
        self._before = None
        self.steps += 1

    def remove(self) -> None:
        """Detach from the optimizer (update mode); safe to call more than once."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._before = None

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state.get("steps", 0))


def checked_soft_mask(value: Any) -> SoftMask:
    """``value`` if it is a :class:`SoftMask` (what the framework callbacks wrap), else an
    :class:`~flipless.errors.InputError`."""
    if not isinstance(value, SoftMask):
        raise InputError(
            f"soft_mask is a {type(value).__name__}; expected a SoftMask "
            "(SoftMasker.hook() makes one)."
        )
    return value


def protected_share(
    importance: Mapping[str, torch.Tensor], threshold: float = 0.5
) -> dict[str, float]:
    """Per layer, the share of entries (units or parameters) with importance > ``threshold``."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise InputError(f"threshold={threshold!r}; expected a number in [0, 1).")
    if not 0 <= threshold < 1:
        raise InputError(f"threshold={threshold!r}; expected a number in [0, 1).")
    return {
        name: float((values > threshold).double().mean()) if values.numel() else 0.0
        for name, values in importance.items()
    }


def protected_share_table(importance: Mapping[str, torch.Tensor], threshold: float = 0.5) -> Table:
    """A rich table of :func:`protected_share`: layer, entries, share above ``threshold``."""
    shares = protected_share(importance, threshold)
    table = Table(title="Protected share")
    table.add_column("layer")
    table.add_column("entries", justify="right")
    table.add_column(f"importance > {threshold:g}", justify="right")
    for name, share in shares.items():
        table.add_row(name, str(importance[name].numel()), f"{share:.1%}")
    return table
