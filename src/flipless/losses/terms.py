"""Per-sample compatibility terms: each maps (new logits, teacher logits, labels) to a loss [N].

Notation (METHODS.md §2): z_n, z_o ∈ R^C the new and the teacher's logits of a sample,
p^T(z) = softmax(z / T). ``class_mask`` (bool [C]) restricts a term to the set O of classes the
teacher knows (an old model trained before classes were added); the softmax is then taken over
O only, for the student as for the teacher: the class-incremental distillation of Learning
without Forgetting (Li & Hoiem, ECCV 2016) and iCaRL (Rebuffi et al., CVPR 2017), in the
softmax form of End-to-End Incremental Learning (Castro et al., ECCV 2018):

    p̂^T_k(z) = exp(z_k / T) / Σ_{j∈O} exp(z_j / T)   for k ∈ O,
    ℓ = T² · Σ_{k∈O} p̂^T_k(z_o) [log p̂^T_k(z_o) − log p̂^T_k(z_n)].

p̂ does not change when a constant is added to the old classes' logits and does not depend on
the new classes' logits at all, so the term only asks the student to rank the old classes as
the teacher does; how much mass it gives the new classes is left to the labels. (Which samples
a term sees is the objective's business: :mod:`flipless.losses.objective` leaves out those
whose label the teacher does not know.)

* :func:`kl_divergence` (focal distillation, FD-KL; Yan et al., CVPR 2021):
  ℓ = T² · Σ_k p^T_k(z_o) [log p^T_k(z_o) − log p^T_k(z_n)], from log-softmax.
* :func:`logit_matching` (FD-LM): ℓ = ½ · mean_k (z_n,k − z_o,k)².
* :func:`logit_difference_inhibition` (LDI, ELODI; Zhao et al., 2022):
  ℓ = (1/|K|) Σ_{k∈K} max(|z_n,k − z_o,k| − ξ, 0)^p over a per-sample class set K.
* :func:`strict_imitation`: soft cross-entropy to the teacher, ℓ = −Σ_k p^T_k(z_o) log p^T_k(z_n).
* :func:`new_error`: ℓ = CE(z_n, y), BackwardCompatibilityML's "dissonance" (used with the
  ``old_correct`` focus, base 0, boost 1: extra cross-entropy where the old model was right).
* ``binary_*``: the same ideas for sigmoid (binary / multi-label) outputs, averaged over labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flipless.errors import InputError, MismatchError


def _check_pair(new_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if new_logits.shape != teacher_logits.shape:
        raise MismatchError(
            f"new logits {tuple(new_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; expected the same [N, C] (map a teacher with "
            "fewer classes into the new label space first)."
        )


def _known(
    new_logits: torch.Tensor, teacher_logits: torch.Tensor, class_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_pair(new_logits, teacher_logits)
    if class_mask is None:
        return new_logits, teacher_logits
    if class_mask.shape != (new_logits.shape[1],) or class_mask.dtype != torch.bool:
        raise MismatchError(
            f"class_mask must be a bool tensor of shape ({new_logits.shape[1]},); got "
            f"{class_mask.dtype} {tuple(class_mask.shape)}."
        )
    return new_logits[:, class_mask], teacher_logits[:, class_mask]


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise InputError(f"temperature={temperature}; expected a positive number.")


def kl_divergence(
    new_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """T² · KL(p^T(z_o) ‖ p^T(z_n)) per sample; with ``class_mask``, of the distributions
    renormalised over the known classes (module docstring)."""
    _check_temperature(temperature)
    new, old = _known(new_logits, teacher_logits, class_mask)
    log_new = F.log_softmax(new / temperature, dim=1)
    log_old = F.log_softmax(old.detach() / temperature, dim=1)
    return temperature**2 * (log_old.exp() * (log_old - log_new)).sum(dim=1)


def logit_matching(
    new_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """½ · mean_k (z_n,k − z_o,k)² per sample."""
    new, old = _known(new_logits, teacher_logits, class_mask)
    return 0.5 * (new - old.detach()).pow(2).mean(dim=1)


def ldi_class_set(
    new_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    top_k: int | None = None,
    top_k_by: str = "new",
    exclude_gt: bool = False,
) -> torch.Tensor:
    """The per-sample class set K of LDI as a bool mask [N, C].

    All classes, or the top-k classes of each sample ranked by the new logits, the teacher's,
    or ``"both"`` (the union); ``exclude_gt`` removes the true class.
    """
    size, classes = new_logits.shape
    if top_k is None:
        members = torch.ones(size, classes, dtype=torch.bool, device=new_logits.device)
    else:
        if not 1 <= top_k <= classes:
            raise InputError(f"top_k={top_k}; expected 1 ≤ top_k ≤ {classes} classes.")
        rankers = {
            "new": [new_logits],
            "teacher": [teacher_logits],
            "both": [new_logits, teacher_logits],
        }
        if top_k_by not in rankers:
            raise InputError(f"top_k_by={top_k_by!r}; expected 'new', 'teacher' or 'both'.")
        members = torch.zeros(size, classes, dtype=torch.bool, device=new_logits.device)
        for ranker in rankers[top_k_by]:
            top = ranker.detach().topk(top_k, dim=1).indices  # per sample: along the class axis
            members.scatter_(1, top, True)
    if exclude_gt:
        members[torch.arange(size, device=labels.device), labels] = False
    return members


def logit_difference_inhibition(
    new_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    power: float = 2.0,
    margin: float = 0.5,
    top_k: int | None = None,
    top_k_by: str = "new",
    exclude_gt: bool = False,
    one_sided: bool = False,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """(1/|K|) Σ_{k∈K} max(d_k − ξ, 0)^p per sample (0 where K is empty).

    d_k = |z_n,k − z_o,k|; with ``one_sided`` only changes towards a flip count: a rise of a
    wrong class (z_n,k − z_o,k for k ≠ y) or a fall of the true class (z_o,y − z_n,y).
    """
    _check_pair(new_logits, teacher_logits)
    if power <= 0 or margin < 0:
        raise InputError(f"power={power}, margin={margin}; expected power > 0 and margin ≥ 0.")
    members = ldi_class_set(new_logits, teacher_logits, labels, top_k, top_k_by, exclude_gt)
    if class_mask is not None:
        _known(new_logits, teacher_logits, class_mask)  # checks the mask
        members &= class_mask[None, :]
    difference = new_logits - teacher_logits.detach()
    if one_sided:
        sign = torch.ones_like(difference)
        sign[torch.arange(labels.shape[0], device=labels.device), labels] = -1.0
        change = (sign * difference).clamp(min=0.0)
    else:
        change = difference.abs()
    penalty = (change - margin).clamp(min=0.0).pow(power) * members
    return penalty.sum(dim=1) / members.sum(dim=1).clamp(min=1)


def strict_imitation(
    new_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    class_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft cross-entropy −Σ_k p^T_k(z_o) log p^T_k(z_n) per sample."""
    _check_temperature(temperature)
    new, old = _known(new_logits, teacher_logits, class_mask)
    targets = F.softmax(old.detach() / temperature, dim=1)
    return -(targets * F.log_softmax(new / temperature, dim=1)).sum(dim=1)


def new_error(new_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE(z_n, y) per sample."""
    return F.cross_entropy(new_logits, labels, reduction="none")


def _per_sample_mean(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def binary_new_error(new_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean over labels of BCE(σ(z_n), y) per sample (sigmoid outputs, y ∈ {0, 1})."""
    return _per_sample_mean(
        F.binary_cross_entropy_with_logits(
            new_logits, labels.to(new_logits.dtype), reduction="none"
        )
    )


def binary_strict_imitation(
    new_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """mean over labels of BCE(σ(z_n / T), σ(z_o / T)): soft targets from the teacher."""
    _check_temperature(temperature)
    _check_pair(new_logits, teacher_logits)
    targets = torch.sigmoid(teacher_logits.detach() / temperature)
    return _per_sample_mean(
        F.binary_cross_entropy_with_logits(new_logits / temperature, targets, reduction="none")
    )


def binary_kl_divergence(
    new_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """mean over labels of T² · KL(Bernoulli(σ(z_o/T)) ‖ Bernoulli(σ(z_n/T)))."""
    _check_temperature(temperature)
    _check_pair(new_logits, teacher_logits)
    new, old = new_logits / temperature, teacher_logits.detach() / temperature
    p_old = torch.sigmoid(old)
    log_ratio_on = F.logsigmoid(old) - F.logsigmoid(new)
    log_ratio_off = F.logsigmoid(-old) - F.logsigmoid(-new)
    return temperature**2 * _per_sample_mean(p_old * log_ratio_on + (1 - p_old) * log_ratio_off)
