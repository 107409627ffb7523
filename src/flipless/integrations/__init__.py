"""Integrations of flipless with training frameworks (Hugging Face Trainer, Lightning)."""
