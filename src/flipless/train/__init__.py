"""Compatible training: models and data that ship, and the training loop."""
