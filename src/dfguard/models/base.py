"""The detector interface every registered model implements.

A detector is an `nn.Module` with two parts: `backbone` (pretrained or shared feature extractor) and
`head` (what is trained from scratch for the real/fake decision). Keeping that split explicit is
what lets training warm up with a frozen backbone and use a lower learning rate for it afterwards.
Its forward pass returns a `DetectorOutput`: one logit per input (frame or clip), the fake
probability, and the feature vector the drift monitor compares between training and production.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from dfguard.transforms import Preset


class DetectorOutput(NamedTuple):
    logits: torch.Tensor  # (B,), > 0 means fake
    probability: torch.Tensor  # (B,), sigmoid(logits), uncalibrated
    features: torch.Tensor  # (B, D), the input of the decision head
    # (B, h, w) logits of where the face was manipulated, from models that localise it (training
    # supervises them with the blend masks); None from the others.
    blend_map: torch.Tensor | None = None


def output_from(
    logits: torch.Tensor, features: torch.Tensor, blend_map: torch.Tensor | None = None
) -> DetectorOutput:
    return DetectorOutput(
        logits=logits, probability=torch.sigmoid(logits), features=features, blend_map=blend_map
    )


def as_channels_last(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    """Depthwise and 1x1 convolutions run about twice as fast on CPU in NHWC layout."""
    return x.contiguous(memory_format=torch.channels_last) if enabled else x


class Detector(nn.Module):
    """Base class; subclasses set `backbone`, `head`, `preset` and `feature_dim`, and define forward."""

    backbone: nn.Module
    head: nn.Module
    preset: Preset
    feature_dim: int
    # True for models that read (B, T, 3, H, W) clips of one face over time; they also score a single
    # face as a clip of one, which is how their per-frame scores are made.
    clip_model: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}  # {"name", "kwargs"}, filled in by `get_model`
        self.backbone_frozen = False

    def nested_configs(self) -> dict[str, Any]:
        """Resolved configs of the sub-models a detector builds, recorded in its own config."""
        return {}

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.head.parameters()

    def train(self, mode: bool = True) -> Detector:
        super().train(mode)
        if self.backbone_frozen:
            # A frozen backbone keeps its BatchNorm statistics too: small batches of face crops would
            # otherwise shift the ImageNet statistics while the weights that rely on them stay fixed.
            self.backbone.eval()
        return self


def single_face_input(model: Detector, crops: torch.Tensor) -> torch.Tensor:
    """A (B, 3, H, W) batch of single face crops in the shape `model` reads: a clip model gets B clips
    of one face each."""
    return crops.unsqueeze(1) if model.clip_model else crops


def freeze_backbone(model: Detector, frozen: bool = True) -> None:
    """Freeze (or unfreeze) the backbone's weights and BatchNorm statistics, for a head-only warm-up."""
    for param in model.backbone_parameters():
        param.requires_grad_(not frozen)
    model.backbone_frozen = frozen
    model.train(model.training)


def check_frames(images: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"expected a (B, 3, H, W) batch, got shape {tuple(images.shape)}")


class FrameDetector(Detector):
    """A per-frame detector: `backbone` maps (B, 3, H, W) to pooled features (B, D); a linear head
    gives the logit."""

    def __init__(
        self, backbone: nn.Module, feature_dim: int, dropout: float, preset: Preset, channels_last: bool
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.head_input_dim = feature_dim  # what `judge` reads (a composed detector's experts read it too)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, 1))
        self.preset = preset
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(as_channels_last(images, self.channels_last))

    def judge(self, features: torch.Tensor) -> DetectorOutput:
        """The head's output for backbone features (B, `head_input_dim`)."""
        return output_from(self.head(features).squeeze(1), features)

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        check_frames(images)
        return self.judge(self.embed(images))
