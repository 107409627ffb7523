"""Feature-space compatibility terms: BCT's influence loss and CNA (METHODS.md §2.2).

Both act on representations φ (the penultimate layer, ``model.features(x)``), not on logits:
the route for embedding models whose vectors sit in an index built by the old model.

* :func:`bct_influence` (backward-compatible training, Shen et al., CVPR 2020):
  ℓ_i = CE(W_old φ_n(x_i) + b_old, y_i). The new features must work with the old model's
  classifier, which stays frozen: gradients reach φ_n through it, never its weights. The head
  is :class:`OldHead`, loaded from the old model or its checkpoint (a published implementation
  left it randomly initialised, which makes the term meaningless).
* :func:`contrastive_neighbourhood_alignment` (CNA): u = φ_n/‖φ_n‖, v = φ_o/‖φ_o‖ over the
  batch; the positive of i is the old model's nearest neighbour π(i) = argmax_{j≠i} v_iᵀv_j and

      ℓ_i = log Σ_{k≠i} exp(u_iᵀu_k / τ) − u_iᵀu_{π(i)} / τ,       τ = 0.01.

  Under DistributedDataParallel the batch is the global one: features are gathered from every
  process with a differentiable all-gather, so the gradient equals one process's on the
  concatenated batch.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flipless.errors import (
    FileFormatError,
    FliplessWarning,
    InputError,
    MismatchError,
    MissingFileError,
)


class OldHead(nn.Module):
    """The old model's classifier head, frozen: new features → old logits.

    ``new_to_old`` maps each new (student) class to the old head's index, −1 for classes the
    old model never saw (their samples get no influence loss). Build it with
    :meth:`from_model` or :meth:`from_file` so the weights are really the old model's.
    ``in_features`` is the width the head takes (that of its first ``nn.Linear``; None when it
    has none): the new features must have it, the old model's ``feature_dim``.
    """

    def __init__(self, head: nn.Module, new_to_old: torch.Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(head, nn.Module):
            raise InputError(f"head must be a torch.nn.Module; got {type(head).__name__}.")
        self.head = head.requires_grad_(False).eval()
        linears = [module for module in head.modules() if isinstance(module, nn.Linear)]
        self.in_features: int | None = linears[0].in_features if linears else None
        if new_to_old is not None:
            new_to_old = torch.as_tensor(new_to_old, dtype=torch.int64)
            if new_to_old.ndim != 1 or (new_to_old < -1).any():
                raise InputError(
                    "new_to_old must be a 1-D integer map with −1 for new classes; "
                    f"got shape {tuple(new_to_old.shape)}."
                )
        self.register_buffer("new_to_old", new_to_old, persistent=False)

    def train(self, mode: bool = True) -> OldHead:
        """Stays in eval mode: the old head's dropout / batch-norm must not change."""
        super().train(False)
        return self

    @classmethod
    def from_model(
        cls,
        old_model: nn.Module,
        attribute: str = "head",
        new_to_old: torch.Tensor | None = None,
    ) -> OldHead:
        """A frozen copy of ``old_model.<attribute>`` (the old model itself is untouched)."""
        head = getattr(old_model, attribute, None)
        if not isinstance(head, nn.Module):
            raise InputError(
                f"the old model has no module attribute {attribute!r}; pass attribute= with the "
                "name of its classifier layer (e.g. 'fc', 'classifier')."
            )
        return cls(copy.deepcopy(head), new_to_old)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        prefix: str = "head.",
        new_to_old: torch.Tensor | None = None,
    ) -> OldHead:
        """A linear head from ``{prefix}weight`` and ``{prefix}bias`` of a saved state dict.

        Reads safetensors, or a torch state dict with ``weights_only=True`` (never a pickle).
        """
        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"no old checkpoint at {path}; expected a saved state dict.")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # unpickling errors come in many types
                raise FileFormatError(
                    f"cannot read {path} as a torch state dict with weights_only=True: {error}"
                ) from error
        if not isinstance(state, dict):
            raise FileFormatError(f"{path} holds a {type(state).__name__}, not a state dict.")
        weight, bias = state.get(f"{prefix}weight"), state.get(f"{prefix}bias")
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            heads = sorted(key for key in state if key.endswith("weight"))[-3:]
            raise FileFormatError(
                f"{path} has no 2-D tensor {prefix + 'weight'!r}; pass prefix= naming the old "
                f"classifier (last weight keys: {heads})."
            )
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        return cls(linear, new_to_old)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The old logits W_old φ + b_old of features [N, in_features]."""
        if self.in_features is not None and features.shape[-1] != self.in_features:
            raise MismatchError(
                f"the new features have width {features.shape[-1]}, but the old head takes "
                f"{self.in_features} features (the old model's feature_dim); BCT feeds the new "
                "features to the old classifier, so their widths must agree. Give the new model "
                f"the old one's feature_dim ({self.in_features}), or make its features() end in "
                f"a projection to width {self.in_features}."
            )
        return self.head(features)

    def old_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels in the old head's classes; −1 where the old model does not know the class."""
        if self.new_to_old is None:
            return labels
        if labels.numel() and int(labels.max()) >= self.new_to_old.shape[0]:
            raise InputError(
                f"label {int(labels.max())} is outside the {self.new_to_old.shape[0]} classes of "
                "new_to_old; give every new class an entry (−1 for new ones)."
            )
        return self.new_to_old.to(labels.device)[labels]


def bct_influence(
    new_features: torch.Tensor, labels: torch.Tensor, old_head: OldHead
) -> torch.Tensor:
    """CE(old_head(φ_n), y) per sample; 0 for samples of classes the old head does not know."""
    if not isinstance(old_head, OldHead):
        raise InputError(
            "old_head must be an OldHead (OldHead.from_model(old_model) or "
            f"OldHead.from_file(path)); got {type(old_head).__name__}."
        )
    if new_features.ndim != 2 or new_features.shape[0] != labels.shape[0]:
        raise MismatchError(
            f"new features {tuple(new_features.shape)} and {labels.shape[0]} labels; expected "
            "features [N, D] with one label per row."
        )
    old_logits = old_head(new_features)
    targets = old_head.old_labels(labels)
    if targets.numel() and int(targets.max()) >= old_logits.shape[1]:
        raise MismatchError(
            f"label {int(targets.max())} but the old head has {old_logits.shape[1]} classes; "
            "pass new_to_old to OldHead for classes added since the old model."
        )
    return F.cross_entropy(old_logits, targets, ignore_index=-1, reduction="none")


def _world() -> tuple[int, int]:
    distributed = torch.distributed
    if distributed.is_available() and distributed.is_initialized():
        return distributed.get_rank(), distributed.get_world_size()
    return 0, 1


def _gather(rows: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """Every process's rows, concatenated in rank order, differentiable (padded all-gather)."""
    from torch.distributed.nn.functional import all_gather

    longest = max(counts)
    padded = F.pad(rows, (0, 0, 0, longest - rows.shape[0]))
    parts = all_gather(padded)
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def _batch_counts(size: int, device: torch.device) -> list[int]:
    _, world = _world()
    if world == 1:
        return [size]
    local = torch.tensor([size], device=device)
    counts = [torch.zeros_like(local) for _ in range(world)]
    torch.distributed.all_gather(counts, local)
    return [int(count) for count in counts]


def contrastive_neighbourhood_alignment(
    new_features: torch.Tensor,
    teacher_features: torch.Tensor,
    temperature: float = 0.01,
    gather: bool = True,
) -> torch.Tensor:
    """CNA per local sample [N], over the global batch when ``gather`` and DDP is running."""
    if not temperature > 0:
        raise InputError(f"temperature={temperature}; expected a positive number.")
    if new_features.ndim != 2 or teacher_features.ndim != 2:
        raise MismatchError(
            f"features must be [N, D]; got new {tuple(new_features.shape)} and teacher "
            f"{tuple(teacher_features.shape)}."
        )
    if new_features.shape[0] != teacher_features.shape[0]:
        raise MismatchError(
            f"{new_features.shape[0]} new and {teacher_features.shape[0]} teacher feature rows; "
            "expected one of each per sample (the dimensions may differ)."
        )
    new = F.normalize(new_features, dim=1)
    old = F.normalize(teacher_features.detach(), dim=1)
    rank, world = _world()
    counts = _batch_counts(new.shape[0], new.device) if gather else [new.shape[0]]
    if gather and world > 1:
        every_new, every_old = _gather(new, counts), _gather(old, counts)
        start = sum(counts[:rank])
    else:
        every_new, every_old, start = new, old, 0
    total = every_new.shape[0]
    if total < 2:
        warnings.warn(
            "CNA needs at least two samples in the (global) batch to find neighbours; "
            "the term is 0 for this batch.",
            FliplessWarning,
            stacklevel=2,
        )
        return new_features.sum(dim=1) * 0.0
    rows = torch.arange(new.shape[0], device=new.device)
    itself = (rows + start)[:, None] == torch.arange(total, device=new.device)[None, :]
    with torch.no_grad():
        neighbour = (old @ every_old.T).masked_fill(itself, float("-inf")).argmax(dim=1)
    similarity = (new @ every_new.T / temperature).masked_fill(itself, float("-inf"))
    return torch.logsumexp(similarity, dim=1) - similarity[rows, neighbour]
