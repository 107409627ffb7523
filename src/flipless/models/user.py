"""A user's own model, named by ``target = "package.module:function"`` (+ ``args``).

``build_model("target", target="my_pkg.models:make", args={"width": 64}, num_classes=10)``
imports ``my_pkg.models``, calls ``make(width=64, num_classes=10)`` (``num_classes`` only
when the callable takes it and ``args`` does not set it; a returned model whose linear
``head`` has another number of rows gets a fresh head of ``num_classes``, as ``hf`` does) and
records how it was built, so
:func:`flipless.models.save_model` can store the model and ``load_model`` rebuild it (the
module must still be importable then). The compatibility losses that need features (BCT, CNA)
and merging need the :class:`~flipless.models.base.FeatureModel` contract; plain and
distillation training need only ``model(inputs) -> logits``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch import nn

from flipless.errors import InputError
from flipless.models.registry import register_model
from flipless.targets import resolve_target


@register_model("target")
def target_model(
    target: str, args: Mapping[str, Any] | None = None, num_classes: int | None = None
) -> nn.Module:
    """The model ``target(**args)`` returns (see the module docstring)."""
    factory = resolve_target(target, key="model.target")
    if not callable(factory):
        raise InputError(
            f"model.target {target!r} names a {type(factory).__name__}, not a class or "
            "function; name the callable that returns your model."
        )
    if args is not None and not isinstance(args, Mapping):
        raise InputError(f"model.args={args!r}; expected a table of keyword arguments.")
    call_args = dict(args or {})
    if num_classes is not None and "num_classes" not in call_args and _accepts(factory):
        call_args["num_classes"] = num_classes
    try:
        model = factory(**call_args)
    except TypeError as error:
        raise InputError(
            f"model.target {target!r} cannot be called with {sorted(call_args)}: {error}. "
            "Fix model.args."
        ) from error
    if not isinstance(model, nn.Module):
        raise InputError(
            f"model.target {target!r} returned a {type(model).__name__}; expected a "
            "torch.nn.Module whose forward gives logits [N, num_classes]."
        )
    _fit_head(model, num_classes)
    model.architecture = "target"
    model.build_kwargs = {"target": target, "args": dict(args or {}), "num_classes": num_classes}
    return model


def _fit_head(model: nn.Module, num_classes: int | None) -> None:
    """Give a model with a linear ``head`` of another size a fresh head of ``num_classes``
    rows (``nn.Linear``'s initialisation), as ``hf`` does for a folder's head."""
    head = getattr(model, "head", None)
    if num_classes is None or not isinstance(head, nn.Linear) or head.out_features == num_classes:
        return
    model.head = nn.Linear(head.in_features, num_classes, bias=head.bias is not None).to(
        device=head.weight.device, dtype=head.weight.dtype
    )
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes


def _accepts(factory: Any) -> bool:
    """Whether ``factory`` takes a ``num_classes`` keyword."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "num_classes" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )
