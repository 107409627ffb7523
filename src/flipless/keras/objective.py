"""The compatibility objective in ``keras.ops``: cross-entropy plus focus-weighted terms.

For terms j with per-sample losses ℓ_j and focus weights w_j (both [N]) and Keras's sample
weights s_i (1 when none are given):

    additive:  L = ce_weight · (1/N) Σ_i s_i CE_i + Σ_j weight_j · (1/N) Σ_i s_i w_ji ℓ_ji
    convex:    L = (1 − Σ_j mix_j) · (1/N) Σ_i s_i CE_i + Σ_j mix_j · (1/N) Σ_i s_i w_ji ℓ_ji

as in :class:`flipless.losses.CompatibilityLoss`, with one difference: Keras's sample weights
(and ``class_weight`` in ``fit``, which Keras turns into sample weights) weight the
cross-entropy too, as every Keras loss does; the PyTorch objective applies them to the
compatibility terms only. Without sample weights both give the same numbers.

Terms are :class:`flipless.losses.Term` objects, and presets come from
:mod:`flipless.losses.registry` (``fd-kl``, ``fd-lm``, ``ldi``, ``elodi``,
``strict-imitation``, ``new-error``): one definition of every preset for both frameworks.
The feature terms (``bct``, ``cna``) and the sigmoid terms (``binary_*``) are PyTorch-only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from keras import ops

from flipless.errors import InputError, MismatchError
from flipless.keras import terms as term_functions
from flipless.keras.focus import focus_weights
from flipless.keras.terms import (
    Tensor,
    as_float,
    as_labels,
    batch_mean,
    check_labels,
    check_logits,
    class_mask_row,
    static_shape,
)
from flipless.losses.objective import Term
from flipless.losses.registry import PRESETS, preset_term

#: Per-sample term functions by kind (the kinds of :mod:`flipless.losses`) and their inputs.
TERMS: dict[str, tuple[Callable[..., Tensor], tuple[str, ...]]] = {
    "kl": (term_functions.kl_divergence, ("new_logits", "old_logits", "class_mask")),
    "logit_matching": (
        term_functions.logit_matching,
        ("new_logits", "old_logits", "class_mask"),
    ),
    "ldi": (
        term_functions.logit_difference_inhibition,
        ("new_logits", "old_logits", "labels", "class_mask"),
    ),
    "strict_imitation": (
        term_functions.strict_imitation,
        ("new_logits", "old_logits", "class_mask"),
    ),
    "new_error": (term_functions.new_error, ("new_logits", "labels")),
}


def _supported(kind: str, where: str) -> None:
    if kind not in TERMS:
        raise InputError(
            f"{where} uses the term {kind!r}, which flipless.keras does not provide; expected "
            f"one of {', '.join(TERMS)} (the feature and sigmoid terms are in flipless.losses, "
            "for PyTorch)."
        )


class CompatibilityLoss:
    """Cross-entropy plus compatibility terms; calling it returns (total, parts for logging).

    Example (focal distillation, Yan et al. CVPR 2021)::

        loss = CompatibilityLoss([Term("kl", focus="old_correct", base=1, boost=5,
                                       weight=1.0, options={"temperature": 100})])
        total, parts = loss(new_logits, labels, old_logits)

    ``parts`` holds the batch value of the cross-entropy, of each term (keyed by its kind,
    or ``kind.index`` when a kind repeats) and the total. Old logits are passed through
    ``stop_gradient``.
    """

    def __init__(self, terms: Sequence[Term], ce_weight: float = 1.0) -> None:
        self.terms = tuple(terms)
        for term in self.terms:
            if not isinstance(term, Term):
                raise InputError(
                    f"terms must be flipless.losses.Term objects; got {type(term).__name__}."
                )
            _supported(term.kind, "A term")
        if ce_weight < 0:
            raise InputError(f"ce_weight={ce_weight}; expected ≥ 0.")
        total_mix = sum(term.mix or 0.0 for term in self.terms)
        if total_mix > 1.0 + 1e-12:
            raise InputError(f"The terms' mix values add up to {total_mix}; expected at most 1.")
        self.requested_ce_weight = float(ce_weight)
        self.ce_weight = ce_weight * (1.0 - total_mix)
        #: the cross-entropy weight a sample of a class outside ``class_mask`` gets back (its
        #: teacher terms are left out; :mod:`flipless.losses.objective`, "growing label set")
        self.unknown_class_ce_bonus = ce_weight * sum(
            term.mix or 0.0 for term in self.terms if "old_logits" in TERMS[term.kind][1]
        )
        kinds = [term.kind for term in self.terms]
        #: the key of each term in the parts dict: its kind, or kind.index when repeated
        self.part_names = [
            kind if kinds.count(kind) == 1 else f"{kind}.{index}"
            for index, kind in enumerate(kinds)
        ]

    @property
    def needs_old(self) -> bool:
        """Whether a term or a focus rule needs the old model's logits."""
        return any(
            "old_logits" in TERMS[term.kind][1] or term.focus in ("old_correct", "neg_flip")
            for term in self.terms
        )

    def __repr__(self) -> str:
        return f"CompatibilityLoss({list(self.terms)!r}, ce_weight={self.requested_ce_weight})"

    def __call__(
        self,
        new_logits: Tensor,
        labels: Tensor,
        old_logits: Tensor | None = None,
        sample_weights: Tensor | None = None,
        class_mask: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        check_logits(new_logits, old_logits)
        check_labels(labels, new_logits)
        new_logits = as_float(new_logits)
        labels = as_labels(labels)
        if old_logits is not None:
            old_logits = ops.stop_gradient(ops.cast(old_logits, new_logits.dtype))
        elif self.needs_old:
            raise InputError(
                "The objective needs the old model's logits (a term compares with them or a "
                "focus rule asks where the old model was right); none were given."
            )
        if sample_weights is not None:
            sample_weights = ops.cast(sample_weights, new_logits.dtype)
            if len(static_shape(sample_weights)) != 1:
                raise MismatchError(
                    f"sample_weights has shape {static_shape(sample_weights)}; expected [N], "
                    "one weight per sample."
                )
        cross_entropy = term_functions.new_error(new_logits, labels)
        if sample_weights is not None:
            cross_entropy = cross_entropy * sample_weights
        base_loss = batch_mean(cross_entropy)
        parts = {"cross_entropy": ops.stop_gradient(base_loss)}
        known_label = None  # k_i = 1[y_i is a class the old model knows]
        if class_mask is not None:
            row = class_mask_row(class_mask, static_shape(new_logits)[1])
            known_label = ops.take(ops.cast(ops.reshape(row, (-1,)), new_logits.dtype), labels)
        if known_label is None or self.unknown_class_ce_bonus == 0:
            total = self.ce_weight * base_loss
        else:
            ce_weights = self.ce_weight + self.unknown_class_ce_bonus * (1.0 - known_label)
            total = batch_mean(ce_weights * cross_entropy)
        inputs = {
            "new_logits": new_logits,
            "old_logits": old_logits,
            "labels": labels,
            "class_mask": class_mask,
        }
        for name, term in zip(self.part_names, self.terms, strict=True):
            function, needs = TERMS[term.kind]
            per_sample = function(**{need: inputs[need] for need in needs}, **term.options)
            focus_old = old_logits
            if old_logits is not None and class_mask is not None:
                # the old model's answer is among the classes it knows
                known = class_mask_row(class_mask, static_shape(new_logits)[1])
                focus_old = ops.where(known, old_logits, ops.full_like(old_logits, -1e9))
            weights = focus_weights(
                term.focus,
                new_logits,
                focus_old,
                labels,
                term.base,
                term.boost,
                sample_weights,
            )
            if known_label is not None and "old_logits" in needs:
                weights = weights * known_label  # the old model has no say on its unknown classes
            value = batch_mean(weights * per_sample)
            parts[name] = ops.stop_gradient(value)
            total = total + (term.weight if term.weight is not None else term.mix) * value
        parts["total"] = ops.stop_gradient(total)
        return total, parts

    def get_config(self) -> dict[str, Any]:
        """A JSON-serialisable description (used when a CompatibleModel is saved)."""
        return {
            "terms": [{**asdict(term), "options": dict(term.options)} for term in self.terms],
            "ce_weight": self.requested_ce_weight,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CompatibilityLoss:
        return cls([Term(**term) for term in config["terms"]], ce_weight=config["ce_weight"])


def build_loss(name: str, ce_weight: float = 1.0, **overrides: Any) -> CompatibilityLoss:
    """The Keras objective of a preset of :mod:`flipless.losses.registry`, with overrides.

    ``build_loss("fd-kl", temperature=10, boost=2)``: an override is a term field (``focus``,
    ``base``, ``boost``, ``weight``, ``mix``) or an option of the term function.
    """
    if name in PRESETS:
        _supported(PRESETS[name]()["kind"], f"The preset {name!r}")
    return CompatibilityLoss([preset_term(name, **overrides)], ce_weight=ce_weight)
