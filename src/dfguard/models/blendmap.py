"""EfficientNet-Lite0 that also maps where a face was manipulated (after Face X-ray, Li et al. 2020).

A whole-face classifier trained on a few identities learns what those people's photos look like and
calls unfamiliar real faces fake. Asking the same network to outline the pasted region, from an
early, still local feature map, ties its features to blending evidence (a colour, sharpness or noise
step along a boundary) that every identity shares. Training supervises the map with the self-blends'
own masks and the face oval for dataset fakes; at inference the map is a by-product.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch import nn

from dfguard.models.base import DetectorOutput, as_channels_last, check_frames, output_from
from dfguard.models.frame import EfficientNetLite0
from dfguard.models.registry import register_model


@register_model("blend_map")
class BlendMapDetector(EfficientNetLite0):
    """EfficientNet-Lite0 (ImageNet weights) whose block stage `map_stage` also feeds a 1x1 convolution
    giving manipulation-map logits (stage 3 has stride 8: a 16x16 map for a 128 px input)."""

    def __init__(
        self,
        pretrained: bool = True,
        map_stage: int = 3,
        dropout: float = 0.2,
        input_size: int = 224,
        channels_last: bool = True,
    ) -> None:
        super().__init__(pretrained, dropout, input_size=input_size, channels_last=channels_last)
        net = self.backbone
        if not 1 <= map_stage <= len(net.blocks):
            raise ValueError(f"map_stage must be within [1, {len(net.blocks)}], got {map_stage}")
        self.map_stage = map_stage
        self.map_head = nn.Conv2d(net.blocks[map_stage - 1][-1].conv_pwl.out_channels, 1, kernel_size=1)

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """The map head is new, like the decision head: it trains during the frozen-backbone warm-up."""
        return itertools.chain(self.head.parameters(), self.map_head.parameters())

    def _features_and_map(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.backbone
        x = net.bn1(net.conv_stem(as_channels_last(images, self.channels_last)))
        x = net.blocks[: self.map_stage](x)
        blend_map = self.map_head(x).squeeze(1)
        x = net.bn2(net.conv_head(net.blocks[self.map_stage :](x)))
        return net.forward_head(x), blend_map

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._features_and_map(images)[0]

    def forward(self, images: torch.Tensor) -> DetectorOutput:
        check_frames(images)
        features, blend_map = self._features_and_map(images)
        return output_from(self.head(features).squeeze(1), features, blend_map)
