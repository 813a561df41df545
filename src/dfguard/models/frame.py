"""Per-frame detectors: a CNN backbone with global pooling and a one-logit linear head."""

from __future__ import annotations

import itertools

import timm
import torchvision
from torch import nn

from dfguard.models.base import FrameDetector
from dfguard.models.registry import register_model
from dfguard.models.weights import (
    load_efficientnet_lite0_imagenet,
    load_initial_weights,
    load_mobilenet_v2_imagenet,
    load_user_weights,
)
from dfguard.transforms import IMAGENET_MEAN, IMAGENET_STD, SYMMETRIC_MEAN, SYMMETRIC_STD, Preset


def efficientnet_lite0_network(pretrained: bool, drop_path_rate: float = 0.0) -> nn.Module:
    """timm's `tf_efficientnet_lite0` without its classifier, with the shipped ImageNet weights when
    `pretrained` (and initial weights are not being skipped)."""
    net = timm.create_model(
        "tf_efficientnet_lite0", pretrained=False, num_classes=0, drop_path_rate=drop_path_rate
    )
    if pretrained and load_initial_weights():
        load_efficientnet_lite0_imagenet(net)
    return net


@register_model("efficientnet_lite0")
class EfficientNetLite0(FrameDetector):
    """EfficientNet-Lite0 (4.7 M parameters with the ImageNet head, 3.4 M without) with ImageNet weights.

    The shipped weights are a port of TensorFlow's EfficientNet-Lite0, so the network is timm's
    `tf_efficientnet_lite0` (TF "same" padding, BatchNorm eps 1e-3) and inputs are scaled to about
    [-1, 1] as in TF's training. Checked on real photos: BatchNorm input statistics match the stored
    running statistics better, and ImageNet predictions are more confident, than with PyTorch padding,
    eps 1e-5 or ImageNet mean/std.
    """

    def __init__(
        self,
        pretrained: bool = True,
        dropout: float = 0.2,
        drop_path_rate: float = 0.0,
        input_size: int = 224,
        channels_last: bool = True,
    ) -> None:
        net = efficientnet_lite0_network(pretrained, drop_path_rate)
        preset = Preset(input_size, SYMMETRIC_MEAN, SYMMETRIC_STD)
        super().__init__(net, net.num_features, dropout, preset, channels_last)


@register_model("mobilenet_v2")
class MobileNetV2(FrameDetector):
    """torchvision's MobileNetV2 (2.2 M parameters without the classifier) with ImageNet weights."""

    def __init__(
        self, pretrained: bool = True, dropout: float = 0.2, input_size: int = 224, channels_last: bool = True
    ) -> None:
        net = torchvision.models.mobilenet_v2()
        if pretrained and load_initial_weights():
            load_mobilenet_v2_imagenet(net)
        backbone = nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        preset = Preset(input_size, IMAGENET_MEAN, IMAGENET_STD)
        super().__init__(backbone, net.last_channel, dropout, preset, channels_last)


@register_model("resnet50")
class ResNet50(FrameDetector):
    """torchvision's ResNet-50, from scratch or from a user's safetensors file (torchvision key names).

    No ImageNet ResNet-50 weights ship in any installable package, so there is no `pretrained` switch.
    """

    def __init__(
        self,
        weights_path: str | None = None,
        dropout: float = 0.2,
        input_size: int = 224,
        channels_last: bool = True,
    ) -> None:
        net = torchvision.models.resnet50()
        feature_dim = net.fc.in_features
        net.fc = nn.Identity()
        if weights_path and load_initial_weights():
            load_user_weights(net, weights_path, ignore_prefixes=("fc.",))
        preset = Preset(input_size, IMAGENET_MEAN, IMAGENET_STD)
        super().__init__(net, feature_dim, dropout, preset, channels_last)


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@register_model("small_cnn")
class SmallCNN(FrameDetector):
    """A tiny from-scratch baseline (four conv blocks): the floor any real detector must beat."""

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        dropout: float = 0.2,
        input_size: int = 224,
        channels_last: bool = True,
    ) -> None:
        channels = (3, *widths)
        blocks = [_conv_block(c_in, c_out) for c_in, c_out in itertools.pairwise(channels)]
        backbone = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        preset = Preset(input_size, IMAGENET_MEAN, IMAGENET_STD)
        super().__init__(backbone, widths[-1], dropout, preset, channels_last)
