"""flipless."""
