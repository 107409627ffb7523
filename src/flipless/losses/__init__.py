"""Compatibility losses: per-sample terms, focus weights and the composable objective."""

from flipless.losses.focus import FOCUS_RULES, focus_weights
from flipless.losses.objective import TERMS, CompatibilityLoss, Term
from flipless.losses.registry import PRESETS, build_loss, preset_term, register

__all__ = [
    "FOCUS_RULES",
    "PRESETS",
    "TERMS",
    "CompatibilityLoss",
    "Term",
    "build_loss",
    "focus_weights",
    "preset_term",
    "register",
]
