"""Models: the registry of shipped architectures, a user's own models, and checkpoints.

Importing this package registers the image and table models (:mod:`flipless.models.vision`,
:mod:`~flipless.models.resnet`, :mod:`~flipless.models.wide_resnet`, :mod:`~flipless.models.vit`);
the Hugging Face models register themselves when first asked for by name. Checkpoints of
torchvision's ResNets and ViTs load with :func:`load_torchvision_state_dict`.
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
from flipless.models.resnet import ResNet34, ResNet50, ResNet101
from flipless.models.torchvision_layout import load_torchvision_state_dict
from flipless.models.vision import MLP, ResNet, ResNet18, SmallCNN
from flipless.models.vit import VisionTransformer
from flipless.models.wide_resnet import WideResNet

__all__ = [
    "CHECKPOINT_FORMAT",
    "MLP",
    "MODELS",
    "FeatureModel",
    "ModelInfo",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "SmallCNN",
    "VisionTransformer",
    "WideResNet",
    "build_model",
    "load_model",
    "load_torchvision_state_dict",
    "model_names",
    "read_model_info",
    "register_model",
    "save_model",
]
