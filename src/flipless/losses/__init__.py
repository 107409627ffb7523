"""Compatibility losses: per-sample terms, focus weights and the composable objective."""

from flipless.losses.focus import FOCUS_RULES, focus_weights
from flipless.losses.objective import TERMS, CompatibilityLoss, Term

__all__ = ["FOCUS_RULES", "TERMS", "CompatibilityLoss", "Term", "focus_weights"]
