"""Focus weights: which samples a compatibility term should care about most.

Positive-congruent training (Yan et al., CVPR 2021) weights each sample's distillation term by

    w_i = base + boost · m_i

where the indicator m_i is one of

* ``all``:           m_i = 0, so every sample has weight ``base``;
* ``old_correct``:   m_i = 1[ŷ_old = y]   (PCT's focal distillation; base 1, boost 5);
* ``neg_flip``:      m_i = 1[ŷ_old = y ∧ ŷ_new ≠ y];
* ``new_incorrect``: m_i = 1[ŷ_new ≠ y].

ŷ_new comes from the current logits, ŷ_old from the teacher's; no gradient flows through m.
Optional per-sample weights supplied by the user multiply w. With sigmoid (multi-label)
outputs, a sample is correct when every label is on the right side of 0.5.
"""

from __future__ import annotations

import torch

from flipless.errors import InputError, MismatchError

FOCUS_RULES = ("all", "old_correct", "neg_flip", "new_incorrect")


def correct(logits: torch.Tensor, labels: torch.Tensor, multilabel: bool = False) -> torch.Tensor:
    """1[prediction = label] per sample: argmax for [N, C]; all labels right for sigmoid outputs."""
    if multilabel:
        return ((logits > 0) == labels.bool()).reshape(logits.shape[0], -1).all(dim=1)
    return logits.argmax(dim=1) == labels


def focus_weights(
    rule: str,
    new_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    base: float = 1.0,
    boost: float = 0.0,
    sample_weights: torch.Tensor | None = None,
    multilabel: bool = False,
) -> torch.Tensor:
    """w_i = (base + boost · m_i) · sample_weight_i, shape [N], without gradient."""
    if rule not in FOCUS_RULES:
        raise InputError(f"Unknown focus rule {rule!r}; expected one of {', '.join(FOCUS_RULES)}.")
    if base < 0 or boost < 0:
        raise InputError(f"base={base} and boost={boost}; expected non-negative weights.")
    with torch.no_grad():
        size = new_logits.shape[0]
        if rule == "all":
            indicator = torch.zeros(size, device=new_logits.device)
        else:
            old_ok = correct(teacher_logits, labels, multilabel)
            new_ok = correct(new_logits, labels, multilabel)
            indicator = {
                "old_correct": old_ok,
                "neg_flip": old_ok & ~new_ok,
                "new_incorrect": ~new_ok,
            }[rule].to(new_logits.dtype)
        weights = base + boost * indicator.to(new_logits.dtype)
        if sample_weights is not None:
            if sample_weights.shape != (size,):
                raise MismatchError(
                    f"sample_weights has shape {tuple(sample_weights.shape)}; expected ({size},), "
                    "one weight per sample."
                )
            weights = weights * sample_weights.to(weights.dtype)
    return weights.detach()
