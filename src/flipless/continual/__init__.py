"""Continual fine-tuning: importance of weights for past tasks, and soft-masking new training
(Ke et al., Findings of EMNLP 2023)."""

from flipless.continual.importance import (
    accumulate,
    compute_importance,
    load_importance,
    save_importance,
    select_layers,
)
from flipless.continual.softmask import SoftMask, protected_share, protected_share_table

__all__ = [
    "SoftMask",
    "accumulate",
    "compute_importance",
    "load_importance",
    "protected_share",
    "protected_share_table",
    "save_importance",
    "select_layers",
]
