"""BackwardCompatibilityML-named losses: switch by changing an import, get the corrected numbers.

The eight classes of Microsoft's BackwardCompatibilityML (BCML), after Srivastava, Nushi,
Kamar, Shah and Horvitz, "An Empirical Analysis of Backward Compatibility in Machine Learning
Systems", KDD 2020, with its constructor ``Loss(h1, h2, lambda_c)`` (h1: the old, reference
model; h2: the new model being trained) and its call ``loss(x, y, reduction="mean")``.

Per sample i, with z_o = h1(x_i), z_n = h2(x_i) and S_i = 1[h1 is right on i] (argmax = y for
softmax outputs; for sigmoid outputs every label on the right side of 0.5, i.e. z_o > 0 ⇔ y = 1):

    total_i = base_i + λ_c · S_i · dissonance_i,     loss = (1/N) Σ_i total_i  ("mean")

* base_i, the underlying loss of h2 to the labels: cross-entropy (NLL of log_softmax),
  binary cross-entropy with logits averaged over the labels of the sample, or
  KL(one-hot(y_i) ‖ softmax(z_n)) (= the cross-entropy).
* new-error ("BC") family: dissonance_i = base_i, extra loss where the old model was right.
* strict-imitation family: dissonance_i imitates the old model's outputs: soft cross-entropy
  −Σ_k p_k(z_o) log p_k(z_n) (NLL, cross-entropy), KL(p(z_o) ‖ p(z_n)) (KL), or the binary
  cross-entropy of σ(z_n) to the soft targets σ(z_o) (binary).

Differences from BCML, on purpose (docs/bcml.md gives the conversion factors): one
normalisation, ÷ N (theirs divides the dissonance by |S|, by |S|·C, or not at all); strict
imitation uses the old model's probabilities (BCML's cross-entropy variant equals its new-error
loss, its KL variant is NaN); h1 runs under ``torch.no_grad()`` and is frozen; h2 runs once
per call; an empty support adds 0, never NaN; models may return plain logits or BCML's triple
(logits, softmax, log_softmax), of which only the logits are used.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from flipless.errors import FliplessWarning, InputError, MismatchError
from flipless.losses import terms
from flipless.losses.focus import correct

__all__ = [
    "BCBinaryCrossEntropyLoss",
    "BCCrossEntropyLoss",
    "BCKLDivergenceLoss",
    "BCMLParts",
    "BCNLLLoss",
    "StrictImitationBinaryCrossEntropyLoss",
    "StrictImitationCrossEntropyLoss",
    "StrictImitationKLDivergenceLoss",
    "StrictImitationNLLLoss",
    "kl_to_labels",
]

REDUCTIONS = ("mean", "batchmean", "sum", "none")
#: BCML's threshold on the binary models' sigmoid, in its two spellings.
_PIVOT_NAMES = ("discriminant_pivot", "discriminan_pivot")

PerSample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class BCMLParts(NamedTuple):
    """Per-sample pieces of a loss, for logging: total_i = base_i + lambda_c · dissonance_i."""

    base: torch.Tensor  # [N] underlying loss of the new model to the labels
    dissonance: torch.Tensor  # [N] S_i · dissonance_i: 0 where the old model is wrong
    support: torch.Tensor  # [N] bool, S_i = 1[the old model is right]


def kl_to_labels(new_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KL(one-hot(y) ‖ softmax(z_n)) = Σ_k t_k (log t_k − log p_k) per sample, 0 · log 0 = 0."""
    log_probs = F.log_softmax(new_logits, dim=1)
    targets = F.one_hot(labels, new_logits.shape[1]).to(log_probs.dtype)
    return (torch.special.xlogy(targets, targets) - targets * log_probs).sum(dim=1)


def _check_lambda(lambda_c: Any) -> float:
    ok = isinstance(lambda_c, numbers.Real) and not isinstance(lambda_c, bool)
    if not ok or not math.isfinite(lambda_c) or lambda_c < 0:
        raise InputError(
            f"lambda_c={lambda_c!r}; expected a finite number ≥ 0 (BackwardCompatibilityML "
            "documents [0, 1]). Pass for example lambda_c=0.5."
        )
    return float(lambda_c)


def _logits(output: Any, role: str, binary: bool) -> torch.Tensor:
    """The logits of a model's output: the tensor itself, or element 0 of a tuple/list."""
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    dims = (1, 2) if binary else (2,)
    if (
        not isinstance(output, torch.Tensor)
        or not output.is_floating_point()
        or output.ndim not in dims
    ):
        got = (
            f"{output.dtype} {tuple(output.shape)}"
            if isinstance(output, torch.Tensor)
            else type(output).__name__
        )
        shapes = "[N] or [N, C] sigmoid logits" if binary else "[N, C] logits"
        raise InputError(
            f"{role} must return float {shapes}, or a tuple/list with them first (such as "
            f"BackwardCompatibilityML's (logits, softmax, log_softmax)); got {got}."
        )
    return output


class _BCMLLoss(nn.Module):
    """total_i = base_i + lambda_c · S_i · dissonance_i, reduced over the batch (see the module).

    Subclasses set ``underlying`` (base_i from new logits and labels), ``imitation``
    (dissonance_i from new and old logits; ``None`` for the new-error family, where
    dissonance_i = base_i) and ``binary`` (sigmoid instead of softmax outputs).
    """

    underlying: ClassVar[PerSample]
    imitation: ClassVar[PerSample | None] = None
    binary: ClassVar[bool] = False

    def __init__(self, h1: nn.Module, h2: nn.Module, lambda_c: float, **kwargs: Any) -> None:
        super().__init__()
        for role, model in (("h1 (the old model)", h1), ("h2 (the new model)", h2)):
            if not isinstance(model, nn.Module):
                raise InputError(f"{role} must be a torch.nn.Module; got {type(model).__name__}.")
        if h1 is h2:
            raise InputError(
                "h1 and h2 are the same module; expected the old model as h1 and a separate new "
                "model as h2 (copy it first, e.g. copy.deepcopy(h1), to fine-tune from it)."
            )
        self.lambda_c = lambda_c  # checked by the property
        self.num_classes: int | None = None
        self._check_options(kwargs)
        self.h1 = h1.requires_grad_(False).eval()
        self.h2 = h2

    @property
    def lambda_c(self) -> float:
        """Weight of the dissonance, a finite number ≥ 0; may be changed between steps."""
        return self._lambda_c

    @lambda_c.setter
    def lambda_c(self, value: float) -> None:
        self._lambda_c = _check_lambda(value)

    def _check_options(self, options: dict[str, Any]) -> None:
        for name in _PIVOT_NAMES if self.binary else ():
            if name in options and options.pop(name) != 0.5:
                raise InputError(
                    f"{name} must be 0.5 here: the old model counts as right when its sigmoid is "
                    "on the right side of 0.5 (logit > 0 ⇔ y = 1). Drop the argument."
                )
        if options:
            warnings.warn(
                f"{type(self).__name__} ignores the keyword arguments {sorted(options)} "
                "(BackwardCompatibilityML accepted and ignored them too).",
                FliplessWarning,
                stacklevel=3,
            )

    def train(self, mode: bool = True) -> _BCMLLoss:
        """Set h2's mode; h1 always stays in eval mode."""
        super().train(mode)
        self.h1.eval()
        return self

    def __repr__(self) -> str:
        fields = [
            f"h1={type(self.h1).__name__}",
            f"h2={type(self.h2).__name__}",
            f"lambda_c={self.lambda_c}",
        ]
        if self.num_classes is not None:
            fields.append(f"num_classes={self.num_classes}")
        return f"{type(self).__name__}({', '.join(fields)})"

    def _old_logits(self, x: Any) -> torch.Tensor:
        if self.h1.training:
            warnings.warn(
                "h1 (the old model) was in training mode; switching it back to eval() so dropout "
                "and batch-norm do not change its outputs.",
                FliplessWarning,
                stacklevel=4,
            )
            self.h1.eval()
        with torch.no_grad():
            return _logits(self.h1(x), "h1 (the old model)", self.binary).detach()

    def _labels(self, y: Any, new_logits: torch.Tensor) -> torch.Tensor:
        """Check y against the outputs; integer class indices come back as int64."""
        if not isinstance(y, torch.Tensor):
            raise InputError(f"y must be a torch.Tensor of labels; got {type(y).__name__}.")
        size = new_logits.shape[0]
        if y.ndim == 0 or y.shape[0] != size:
            raise MismatchError(
                f"h2 returned {size} outputs but y holds {y.shape[0] if y.ndim else 'a scalar'} "
                "labels; expected one label per input sample."
            )
        if self.binary:
            if y.shape != new_logits.shape:
                raise MismatchError(
                    f"y has shape {tuple(y.shape)} but the sigmoid outputs have shape "
                    f"{tuple(new_logits.shape)}; expected labels of the outputs' shape "
                    "(reshape y, e.g. y.view_as(outputs))."
                )
            if bool(((y != 0) & (y != 1)).any()):
                raise InputError(
                    "binary labels must be 0 or 1; got other values. Threshold soft labels first."
                )
            return y
        classes = new_logits.shape[1]
        if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise InputError(
                f"y must hold integer class indices of shape [N]; got {y.dtype} "
                f"{tuple(y.shape)}. Convert one-hot labels with y.argmax(dim=1)."
            )
        if bool(((y < 0) | (y >= classes)).any()):
            raise InputError(
                f"labels must lie in [0, {classes}) for {classes} output classes; got values from "
                f"{int(y.min())} to {int(y.max())}."
            )
        return y.long()

    def forward_parts(self, x: Any, y: torch.Tensor) -> BCMLParts:
        """Run h2 once (with gradients) and h1 once (without); return the per-sample parts."""
        tensors = isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
        if tensors and (x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]):
            raise MismatchError(
                f"x has shape {tuple(x.shape)} and y {tuple(y.shape)}; expected the same "
                "batch size (first dimension) for inputs and labels."
            )
        new_logits = _logits(self.h2(x), "h2 (the new model)", self.binary)
        old_logits = self._old_logits(x)
        if old_logits.shape != new_logits.shape:
            raise MismatchError(
                f"h1 returned {tuple(old_logits.shape)} and h2 {tuple(new_logits.shape)}; expected "
                "the same shape. For an old model with fewer classes use "
                "flipless.losses.CompatibilityLoss with a teacher built on "
                "flipless.teachers.LabelMap, which leaves the new classes out."
            )
        if self.num_classes is not None and new_logits.shape[1] != self.num_classes:
            raise MismatchError(
                f"num_classes={self.num_classes} but the models return {new_logits.shape[1]} "
                "classes; pass the models' width or leave num_classes out."
            )
        if new_logits.shape[0] == 0:
            raise InputError("the batch is empty; expected at least one sample.")
        labels = self._labels(y, new_logits)
        support = correct(old_logits, labels, multilabel=self.binary)
        base = self.underlying(new_logits, labels)
        per_sample = base if self.imitation is None else self.imitation(new_logits, old_logits)
        dissonance = torch.where(support, per_sample, torch.zeros_like(per_sample))
        return BCMLParts(base, dissonance, support)

    def forward(self, x: Any, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Σ or mean over i of base_i + lambda_c · S_i · dissonance_i, or the [N] values.

        ``reduction``: "mean" (the same as "batchmean"): ÷ N; "sum"; "none": per sample [N].
        """
        if reduction not in REDUCTIONS:
            raise InputError(
                f"reduction={reduction!r}; expected one of {', '.join(map(repr, REDUCTIONS))}."
            )
        parts = self.forward_parts(x, y)
        total = parts.base + self.lambda_c * parts.dissonance
        if reduction == "none":
            return total
        return total.sum() if reduction == "sum" else total.mean()


class _KLToLabels(_BCMLLoss):
    """Base loss KL(one-hot(y) ‖ softmax(z_n)); takes BCML's ``num_classes`` and checks it."""

    underlying = staticmethod(kl_to_labels)

    def __init__(
        self,
        h1: nn.Module,
        h2: nn.Module,
        lambda_c: float,
        num_classes: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(h1, h2, lambda_c, **kwargs)
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise InputError(f"num_classes={num_classes!r}; expected a positive int or None.")
        self.num_classes = num_classes


class BCNLLLoss(_BCMLLoss):
    """New error, NLL: base_i = dissonance_i = −log softmax(z_n)_{y_i}.

    Plain outputs are passed through log_softmax, which leaves log-probabilities unchanged, so
    a model ending in ``nn.LogSoftmax`` gives the same loss as its logits.
    """

    underlying = staticmethod(terms.new_error)


class BCCrossEntropyLoss(_BCMLLoss):
    """New error, cross-entropy: base_i = dissonance_i = CE(z_n, y_i)."""

    underlying = staticmethod(terms.new_error)


class BCBinaryCrossEntropyLoss(_BCMLLoss):
    """New error, binary: base_i = dissonance_i = mean over labels of BCE(σ(z_n), y_i).

    Outputs are sigmoid logits [N] or [N, C] (not probabilities), labels 0/1 of the same shape.
    """

    underlying = staticmethod(terms.binary_new_error)
    binary = True


class BCKLDivergenceLoss(_KLToLabels):
    """New error, KL: base_i = dissonance_i = KL(one-hot(y_i) ‖ softmax(z_n)) = CE(z_n, y_i)."""


class StrictImitationNLLLoss(_BCMLLoss):
    """Strict imitation, NLL: base_i = −log softmax(z_n)_{y_i}, soft-target dissonance.

    dissonance_i = −Σ_k p_k(z_o) log p_k(z_n); log-probability outputs work as logits do.
    """

    underlying = staticmethod(terms.new_error)
    imitation = staticmethod(terms.strict_imitation)


class StrictImitationCrossEntropyLoss(_BCMLLoss):
    """Strict imitation, cross-entropy: base_i = CE(z_n, y_i), soft-target dissonance.

    dissonance_i = −Σ_k p_k(z_o) log p_k(z_n): the old model's probabilities, not its labels.
    """

    underlying = staticmethod(terms.new_error)
    imitation = staticmethod(terms.strict_imitation)


class StrictImitationBinaryCrossEntropyLoss(_BCMLLoss):
    """Strict imitation, binary: base_i = mean over labels of BCE(σ(z_n), y_i).

    dissonance_i = mean over labels of BCE(σ(z_n), σ(z_o)), the old model's soft targets.
    """

    underlying = staticmethod(terms.binary_new_error)
    imitation = staticmethod(terms.binary_strict_imitation)
    binary = True


class StrictImitationKLDivergenceLoss(_KLToLabels):
    """Strict imitation, KL: base_i = KL(one-hot(y_i) ‖ p(z_n)), dissonance_i = KL(p(z_o) ‖ p(z_n)).

    Computed from log_softmax, so finite for every lambda_c (BCML's version is NaN).
    """

    imitation = staticmethod(terms.kl_divergence)
