"""EfficientNet-Lite0 cut short, so that each score comes from a patch of the face (after Chai et al.,
"What makes fake images detectable?", 2020).

A whole-face classifier trained on a few dozen people can tell them apart and learns what their
photos look like: on an unseen person it scores the photo, not the manipulation. The early stages of
the network see a patch of the face each (a receptive field smaller than the face), where blending
leaves its evidence (a colour, sharpness or noise step, a resampled texture) but identity is hard to
read. The decision is a linear score of the pooled features of such a stage, which is the mean of the
same linear score of each location: a vote of the patches.
"""

from __future__ import annotations

from torch import nn

from dfguard.models.base import FrameDetector
from dfguard.models.frame import efficientnet_lite0_network
from dfguard.models.registry import register_model
from dfguard.transforms import SYMMETRIC_MEAN, SYMMETRIC_STD, Preset


@register_model("patch")
class PatchDetector(FrameDetector):
    """EfficientNet-Lite0 (ImageNet weights) up to block stage `stage` (of 7), then pooling and a linear
    head. Stage 4 has stride 16 and 80 channels; stage 3 stride 8 and 40 channels."""

    def __init__(
        self,
        pretrained: bool = True,
        stage: int = 4,
        dropout: float = 0.2,
        input_size: int = 224,
        channels_last: bool = True,
    ) -> None:
        # The whole network's weights load first (the shipped file pairs tensors in order), then the
        # stages after `stage` are dropped.
        net = efficientnet_lite0_network(pretrained)
        if not 1 <= stage <= len(net.blocks):
            raise ValueError(f"stage must be within [1, {len(net.blocks)}], got {stage}")
        last_block = net.blocks[stage - 1][-1]
        backbone = nn.Sequential(
            net.conv_stem, net.bn1, *net.blocks[:stage], nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        preset = Preset(input_size, SYMMETRIC_MEAN, SYMMETRIC_STD)
        super().__init__(backbone, last_block.conv_pwl.out_channels, dropout, preset, channels_last)
