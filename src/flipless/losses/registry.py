"""Losses by name: the published presets, so that configs and the command line can say ``fd-kl``.

=====================  ==================================================================  ==========================
name                   terms                                                               source
=====================  ==================================================================  ==========================
``fd-kl``              KL, T = 100, focus old_correct, base 1, boost 5, weight 1           Yan et al., CVPR 2021
``fd-lm``              logit matching, focus old_correct, base 1, boost 5, weight 1        Yan et al., CVPR 2021
``ldi``                LDI, p = 2, margin 0.5, mix 0.5                                     Zhao et al., 2022 (ELODI)
``elodi``              LDI, p = 2, margin 0, mix 0.8 (use with an ensemble teacher)         Zhao et al., 2022
``strict-imitation``   soft cross-entropy to the teacher, focus old_correct (0 + 1·m), λ 1  Srivastava et al., 2020
``new-error``          cross-entropy, focus old_correct (0 + 1·m), λ 1                      Srivastava et al., 2020
``bct``                influence loss through the frozen old head (``old_head=``), λ 1       Shen et al., CVPR 2020
``cna``                contrastive neighbourhood alignment, τ = 0.01, λ 1                  METHODS.md §2.2
=====================  ==================================================================  ==========================

:func:`build_loss` takes overrides: a term field (``focus``, ``base``, ``boost``, ``weight``,
``mix``) or an option of the term function (``temperature``, ``margin``, ``top_k``, …).
A preset is a small function registered with :func:`register` that returns the
:class:`Term` fields (``kind``, ``focus``, …, ``options``) as a dict; the term is built, and
checked, once the overrides are in (``bct`` cannot exist without its ``old_head``).
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

from flipless.errors import InputError
from flipless.losses.objective import INPUTS, TERMS, CompatibilityLoss, Term

Preset = Callable[[], dict[str, Any]]
PRESETS: dict[str, Preset] = {}


def register(name: str) -> Callable[[Preset], Preset]:
    """Register a function that returns a preset's :class:`Term` fields under ``name``."""

    def add(factory: Preset) -> Preset:
        if name in PRESETS:
            raise InputError(f"A loss named {name!r} is already registered.")
        PRESETS[name] = factory
        return factory

    return add


@register("fd-kl")
def focal_kl() -> dict[str, Any]:
    return {
        "kind": "kl",
        "focus": "old_correct",
        "base": 1.0,
        "boost": 5.0,
        "weight": 1.0,
        "options": {"temperature": 100.0},
    }


@register("fd-lm")
def focal_logit_matching() -> dict[str, Any]:
    return {
        "kind": "logit_matching",
        "focus": "old_correct",
        "base": 1.0,
        "boost": 5.0,
        "weight": 1.0,
    }


@register("ldi")
def ldi() -> dict[str, Any]:
    return {"kind": "ldi", "mix": 0.5, "options": {"power": 2.0, "margin": 0.5}}


@register("elodi")
def elodi() -> dict[str, Any]:
    return {"kind": "ldi", "mix": 0.8, "options": {"power": 2.0, "margin": 0.0}}


@register("strict-imitation")
def strict_imitation() -> dict[str, Any]:
    return {
        "kind": "strict_imitation",
        "focus": "old_correct",
        "base": 0.0,
        "boost": 1.0,
        "weight": 1.0,
    }


@register("new-error")
def new_error() -> dict[str, Any]:
    return {"kind": "new_error", "focus": "old_correct", "base": 0.0, "boost": 1.0, "weight": 1.0}


@register("bct")
def backward_compatible_training() -> dict[str, Any]:
    return {"kind": "bct", "weight": 1.0}


@register("cna")
def contrastive_neighbourhood_alignment() -> dict[str, Any]:
    return {"kind": "cna", "weight": 1.0, "options": {"temperature": 0.01}}


TERM_FIELDS = {"focus", "base", "boost", "weight", "mix"}


def check_number(name: str, key: str, value: Any) -> None:
    """Raise an InputError naming ``key`` unless ``value`` is a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise InputError(f"Loss {name!r}: {key}={value!r}; expected a finite number.")


def preset_term(name: str, **overrides: Any) -> Term:
    """The preset's term with ``overrides`` applied (checked against what the term accepts)."""
    if name not in PRESETS:
        raise InputError(f"Unknown loss {name!r}; expected one of {', '.join(sorted(PRESETS))}.")
    spec = PRESETS[name]()
    fields = {key: value for key, value in overrides.items() if key in TERM_FIELDS}
    options = {key: value for key, value in overrides.items() if key not in TERM_FIELDS}
    parameters = inspect.signature(TERMS[spec["kind"]][0]).parameters
    accepted = set(parameters) - set(INPUTS)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(
            f"Loss {name!r} has no setting {', '.join(map(repr, unknown))}; expected term fields "
            f"{sorted(TERM_FIELDS)} or options {sorted(accepted)}."
        )
    for key, value in fields.items():
        if key != "focus" and value is not None:
            check_number(name, key, value)
    for key, value in options.items():
        default = parameters[key].default
        if isinstance(default, numbers.Real) and not isinstance(default, bool):
            check_number(name, key, value)
    if "mix" in fields and "weight" not in fields:
        fields["weight"] = None
    if "weight" in fields and "mix" not in fields:
        fields["mix"] = None
    spec.update(fields)
    spec["options"] = {**spec.get("options", {}), **options}
    return Term(**spec)


def build_loss(name: str, ce_weight: float = 1.0, **overrides: Any) -> CompatibilityLoss:
    """A :class:`CompatibilityLoss` from a preset name, e.g. ``build_loss("fd-kl", temperature=10)``."""
    check_number(name, "ce_weight", ce_weight)
    return CompatibilityLoss([preset_term(name, **overrides)], ce_weight=ce_weight)
