"""Models: the registry of shipped architectures, a user's own models, and checkpoints.

Importing this package registers the image and table models (:mod:`flipless.models.vision`);
the Hugging Face models register themselves when first asked for by name.
"""

from flipless.models.base import FeatureModel
from flipless.models.files import (
    CHECKPOINT_FORMAT,
    ModelInfo,
    load_model,
    read_model_info,
    save_model,
)
from flipless.models.registry import MODELS, build_model, model_names, register_model
from flipless.models.vision import MLP, ResNet, ResNet18, SmallCNN

__all__ = [
    "CHECKPOINT_FORMAT",
    "MLP",
    "MODELS",
    "FeatureModel",
    "ModelInfo",
    "ResNet",
    "ResNet18",
    "SmallCNN",
    "build_model",
    "load_model",
    "model_names",
    "read_model_info",
    "register_model",
    "save_model",
]
