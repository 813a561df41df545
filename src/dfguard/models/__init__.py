"""Detectors: a strict registry, one interface (`Detector` -> `DetectorOutput`) and safetensors IO.

Importing the package registers every built-in model: `efficientnet_lite0` (the default),
`blend_map` (the same network also outlining the manipulated region), `mobilenet_v2`, `resnet50`,
`small_cnn`, `clip_vit_b16` (a linear probe on a frozen CLIP ViT-B/16), `clip_frozen`, `temporal`,
`ensemble` and `composed` (a detector plus the experts the loop added).
"""

from dfguard.models import blendmap, clip, clip_frozen, composed, ensemble, frame, patch, temporal  # noqa: F401  (registers the built-in models)
from dfguard.models.base import Detector, DetectorOutput, FrameDetector, freeze_backbone
from dfguard.models.io import load_detector, save_detector
from dfguard.models.registry import crop_detector, get_model, list_models, model_class, register_model

DEFAULT_MODEL = "efficientnet_lite0"

__all__ = [
    "DEFAULT_MODEL",
    "Detector",
    "DetectorOutput",
    "FrameDetector",
    "crop_detector",
    "freeze_backbone",
    "get_model",
    "list_models",
    "load_detector",
    "model_class",
    "register_model",
    "save_detector",
]
