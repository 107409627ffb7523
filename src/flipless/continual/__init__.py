"""Continual fine-tuning: importance of weights for past tasks, soft-masking new training, and
per-task sub-networks (Ke et al., Findings of EMNLP 2023)."""

from flipless.continual.importance import (
    LAYER_PRESETS,
    accumulate,
    compute_importance,
    load_importance,
    save_importance,
    select_layers,
    self_kl_loss,
)
from flipless.continual.masker import SoftMasker
from flipless.continual.softmask import SoftMask, protected_share, protected_share_table
from flipless.continual.subnetwork import (
    PopupLinear,
    add_task,
    popup_layers,
    set_task,
    to_subnetwork,
    use_task,
)

__all__ = [
    "LAYER_PRESETS",
    "PopupLinear",
    "SoftMask",
    "SoftMasker",
    "accumulate",
    "add_task",
    "compute_importance",
    "load_importance",
    "popup_layers",
    "protected_share",
    "protected_share_table",
    "save_importance",
    "select_layers",
    "self_kl_loss",
    "set_task",
    "to_subnetwork",
    "use_task",
]
