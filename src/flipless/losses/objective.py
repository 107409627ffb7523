"""The compatibility objective: cross-entropy plus focus-weighted compatibility terms.

For terms j with per-sample losses ℓ_j (shape [N]) and focus weights w_j (shape [N]):

    additive:  L = ce_weight · CE + Σ_j weight_j · (1/N) Σ_i w_ji ℓ_ji
    convex:    L = (1 − Σ_j mix_j) · CE + Σ_j mix_j · (1/N) Σ_i w_ji ℓ_ji      (Σ mix ≤ 1)

A term is either additive (``weight``) or convex (``mix``); both kinds may be combined, the
cross-entropy then getting ``ce_weight · (1 − Σ mix)``. One normalisation for every term: the
mean over the batch. Weights and losses are asserted to be [N] (the amazon-science code
multiplied [N, 1] by [N], which broadcasts to [N, N]). Teacher logits are detached, so the
old model never receives gradients, and the student is run once by the caller.

A growing label set (``class_mask``: the classes the teacher knows, e.g. a
:class:`~flipless.teachers.LabelMap`'s). With k_i = 1[y_i ∈ known], every term that reads the
teacher's logits is weighted w_ji · k_i, and the cross-entropy of sample i is weighted
ce_weight · (1 − Σ_{j: mix, teacher} mix_j · k_i − Σ_{j: mix, no teacher} mix_j): a sample of a
class the old model never had is trained by its label alone, with the full cross-entropy
weight. Why leave such samples out rather than distil on them: a negative flip needs the old
model to be right, which it can only be on a class it knows, so they carry no compatibility
signal; the logit terms (FD-LM, LDI) would pin the old classes' logits at the old model's
values on an input it could only misclassify, holding back the margin the new class needs;
and with a ``mix`` term they would lose that share of their only learning signal. The softmax
terms are renormalised over the known classes besides (:func:`~flipless.losses.terms.kl_divergence`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flipless.errors import InputError, MismatchError
from flipless.losses import features as feature_terms
from flipless.losses import terms as term_functions
from flipless.losses.focus import focus_weights

#: Per-sample term functions by name and the inputs they take, by argument name.
TERMS: dict[str, tuple[Callable[..., torch.Tensor], tuple[str, ...]]] = {
    "kl": (term_functions.kl_divergence, ("new_logits", "teacher_logits", "class_mask")),
    "logit_matching": (
        term_functions.logit_matching,
        ("new_logits", "teacher_logits", "class_mask"),
    ),
    "ldi": (
        term_functions.logit_difference_inhibition,
        ("new_logits", "teacher_logits", "labels", "class_mask"),
    ),
    "strict_imitation": (
        term_functions.strict_imitation,
        ("new_logits", "teacher_logits", "class_mask"),
    ),
    "new_error": (term_functions.new_error, ("new_logits", "labels")),
    "binary_kl": (term_functions.binary_kl_divergence, ("new_logits", "teacher_logits")),
    "binary_strict_imitation": (
        term_functions.binary_strict_imitation,
        ("new_logits", "teacher_logits"),
    ),
    "binary_new_error": (term_functions.binary_new_error, ("new_logits", "labels")),
    "bct": (feature_terms.bct_influence, ("new_features", "labels")),
    "cna": (
        feature_terms.contrastive_neighbourhood_alignment,
        ("new_features", "teacher_features"),
    ),
}
#: The batch inputs a term can take; everything else a term function accepts is an option.
INPUTS = (
    "new_logits",
    "teacher_logits",
    "labels",
    "class_mask",
    "new_features",
    "teacher_features",
)
BINARY_TERMS = {"binary_kl", "binary_strict_imitation", "binary_new_error"}


@dataclass(frozen=True)
class Term:
    """One compatibility term with its focus rule and its strength.

    Exactly one of ``weight`` (additive λ) and ``mix`` (convex a ∈ [0, 1]) is set.
    ``options`` are passed to the term function (temperature, margin, top_k, …).
    """

    kind: str
    focus: str = "all"
    base: float = 1.0
    boost: float = 0.0
    weight: float | None = None
    mix: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in TERMS:
            raise InputError(f"Unknown term {self.kind!r}; expected one of {', '.join(TERMS)}.")
        if (self.weight is None) == (self.mix is None):
            raise InputError(
                f"Term {self.kind!r}: give exactly one of weight (additive) or mix (convex)."
            )
        if self.weight is not None and self.weight < 0:
            raise InputError(f"Term {self.kind!r}: weight={self.weight}; expected ≥ 0.")
        if self.mix is not None and not 0.0 <= self.mix <= 1.0:
            raise InputError(f"Term {self.kind!r}: mix={self.mix}; expected a value in [0, 1].")
        parameters = inspect.signature(TERMS[self.kind][0]).parameters
        accepted = set(parameters) - set(INPUTS)
        unknown = sorted(set(self.options) - accepted)
        if unknown:
            raise InputError(
                f"Term {self.kind!r} has no option {', '.join(map(repr, unknown))}; "
                f"expected some of {sorted(accepted)}."
            )
        required = [
            name
            for name in accepted
            if parameters[name].default is inspect.Parameter.empty and name not in self.options
        ]
        if required:
            hint = " (OldHead.from_model(old_model) or OldHead.from_file(path))"
            raise InputError(
                f"Term {self.kind!r} needs the option {', '.join(map(repr, required))}"
                f"{hint if 'old_head' in required else ''}."
            )


class CompatibilityLoss(nn.Module):
    """Cross-entropy plus compatibility terms; ``forward`` returns (total, parts for logging).

    Example (focal distillation, Yan et al. CVPR 2021)::

        loss = CompatibilityLoss([Term("kl", focus="old_correct", base=1, boost=5,
                                       weight=1.0, options={"temperature": 100})])
        total, parts = loss(new_logits, labels, teacher_logits)

    Feature terms (``bct``, ``cna``) also take ``new_features`` (and ``teacher_features``),
    the penultimate representations [N, D]. Modules among the options (BCT's old head) are
    registered here, so ``loss.to(device)`` moves them with the loss.
    """

    def __init__(self, terms: Sequence[Term], ce_weight: float = 1.0) -> None:
        super().__init__()
        self.terms = tuple(terms)
        if ce_weight < 0:
            raise InputError(f"ce_weight={ce_weight}; expected ≥ 0.")
        total_mix = sum(term.mix or 0.0 for term in self.terms)
        if total_mix > 1.0 + 1e-12:
            raise InputError(f"The terms' mix values add up to {total_mix}; expected at most 1.")
        self.ce_weight = ce_weight * (1.0 - total_mix)
        #: the cross-entropy weight a sample of a class unknown to the teacher gets back
        self.unknown_class_ce_bonus = ce_weight * sum(
            term.mix or 0.0 for term in self.terms if "teacher_logits" in TERMS[term.kind][1]
        )
        self.multilabel = any(term.kind in BINARY_TERMS for term in self.terms)
        if self.multilabel and not all(term.kind in BINARY_TERMS for term in self.terms):
            raise InputError("Binary (sigmoid) terms cannot be combined with softmax terms.")
        kinds = [term.kind for term in self.terms]
        #: the key of each term in the parts dict: its kind, or kind.index when repeated
        #: (letters, digits, '_', '.' only, so that trackers such as MLflow accept them)
        self.part_names = [
            kind if kinds.count(kind) == 1 else f"{kind}.{index}"
            for index, kind in enumerate(kinds)
        ]
        self.option_modules = nn.ModuleList(
            value
            for term in self.terms
            for value in term.options.values()
            if isinstance(value, nn.Module)
        )

    @property
    def needs_features(self) -> bool:
        """Whether a term works on features, so the caller must pass ``new_features``."""
        return any("new_features" in TERMS[term.kind][1] for term in self.terms)

    @property
    def needs_teacher(self) -> bool:
        """Whether a term or a focus rule needs the teacher's logits."""
        return any(
            "teacher_logits" in TERMS[term.kind][1] or term.focus in ("old_correct", "neg_flip")
            for term in self.terms
        )

    def forward(
        self,
        new_logits: torch.Tensor,
        labels: torch.Tensor,
        teacher_logits: torch.Tensor | None = None,
        sample_weights: torch.Tensor | None = None,
        class_mask: torch.Tensor | None = None,
        new_features: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        size = new_logits.shape[0]
        if labels.shape[0] != size:
            raise MismatchError(f"{labels.shape[0]} labels for {size} samples; expected one each.")
        if teacher_logits is not None and teacher_logits.shape != new_logits.shape:
            raise MismatchError(
                f"teacher logits {tuple(teacher_logits.shape)} and new logits "
                f"{tuple(new_logits.shape)} differ; expected the same shape."
            )
        for name, features in (("new", new_features), ("teacher", teacher_features)):
            if features is not None and features.shape[0] != size:
                raise MismatchError(
                    f"{name} features have {features.shape[0]} rows for {size} samples; "
                    "expected one row per sample."
                )
        known_label = self._known_labels(labels, class_mask, new_logits.shape[1])
        if self.multilabel:
            base_loss = term_functions.binary_new_error(new_logits, labels).mean()
            total = self.ce_weight * base_loss
        else:
            per_sample_ce = F.cross_entropy(new_logits, labels, reduction="none")
            base_loss = per_sample_ce.mean()
            if known_label is None or self.unknown_class_ce_bonus == 0:
                total = self.ce_weight * base_loss
            else:
                ce_weights = self.ce_weight + self.unknown_class_ce_bonus * (~known_label)
                total = (ce_weights * per_sample_ce).mean()
        parts = {"cross_entropy": base_loss.detach()}
        teacher = teacher_logits.detach() if teacher_logits is not None else None
        inputs: dict[str, torch.Tensor | None] = {
            "new_logits": new_logits,
            "teacher_logits": teacher,
            "labels": labels,
            "class_mask": class_mask,
            "new_features": new_features,
            "teacher_features": (
                teacher_features.detach() if teacher_features is not None else None
            ),
        }
        for index, term in enumerate(self.terms):
            function, needs = TERMS[term.kind]
            missing = [need for need in needs if need != "class_mask" and inputs[need] is None]
            if missing:
                raise InputError(
                    f"Term {term.kind!r} needs {', '.join(missing)}; none were given "
                    "(features come from model.features(x) of the new and the old model)."
                )
            if teacher is None and term.focus in ("old_correct", "neg_flip"):
                raise InputError(
                    f"Term {term.kind!r} focuses on {term.focus!r}, which needs the teacher's "
                    "logits to know where the old model was right; none were given."
                )
            arguments = {need: inputs[need] for need in needs}
            per_sample = function(**arguments, **term.options)
            focus_teacher = teacher if teacher is not None else new_logits.detach()
            if teacher is not None and class_mask is not None:
                # the old model's answer is among the classes it knows, whatever teacher
                # logits a caller put in the other columns
                focus_teacher = teacher.masked_fill(~class_mask, float("-inf"))
            weights = focus_weights(
                term.focus,
                new_logits,
                focus_teacher,
                labels,
                term.base,
                term.boost,
                sample_weights,
                self.multilabel,
            )
            if known_label is not None and "teacher_logits" in needs:
                weights = weights * known_label  # the teacher has no say on its unknown classes
            if per_sample.shape != (size,) or weights.shape != (size,):
                raise MismatchError(
                    f"Term {term.kind!r} gave losses {tuple(per_sample.shape)} and weights "
                    f"{tuple(weights.shape)}; expected both ({size},)."
                )
            value = (weights * per_sample).mean()
            parts[self.part_names[index]] = value.detach()
            total = total + (term.weight if term.weight is not None else term.mix) * value
        parts["total"] = total.detach()
        return total, parts

    def _known_labels(
        self, labels: torch.Tensor, class_mask: torch.Tensor | None, classes: int
    ) -> torch.Tensor | None:
        """k_i = 1[y_i is a class the teacher knows] [N], or None when it knows them all."""
        if class_mask is None:
            return None
        if class_mask.shape != (classes,) or class_mask.dtype != torch.bool:
            raise MismatchError(
                f"class_mask must be a bool tensor of shape ({classes},); got "
                f"{class_mask.dtype} {tuple(class_mask.shape)}."
            )
        if self.multilabel:
            raise InputError(
                "class_mask applies to softmax terms; binary (sigmoid) terms have no "
                "teacher-unknown classes to leave out."
            )
        return class_mask.to(labels.device)[labels]
