"""Architectures: zoo's own nets, any timm name, and task heads."""

from . import nets  # noqa: F401  (registers zoo's architectures)
from . import expandable, resmlp, resnet, wrn  # noqa: F401  (registers their architectures)
from .factory import (ModelConfig, build_from_config, create_model, is_known_architecture, is_zoo_model, list_models,
                      register_model, register_split, specialized_prefixes, validate_model_args)
from .interface import classifier_head, features, features_and_logits
from .heads import MultiHeadNet

__all__ = ["ModelConfig", "MultiHeadNet", "build_from_config", "classifier_head", "create_model", "features",
           "features_and_logits",
           "is_known_architecture", "is_zoo_model", "list_models", "register_model", "register_split",
           "specialized_prefixes", "validate_model_args"]
