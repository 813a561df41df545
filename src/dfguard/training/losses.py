"""Training losses on logits (> 0 means fake)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional


class FocalLoss(nn.Module):
    """Binary focal loss (Lin et al. 2017): down-weights the easy examples, which on a dataset of
    mostly obvious fakes would otherwise dominate the gradient."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_correct = torch.exp(-bce)
        return ((1.0 - p_correct) ** self.gamma * bce).mean()


def loss_function(name: str, focal_gamma: float = 2.0) -> nn.Module:
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "focal":
        return FocalLoss(focal_gamma)
    raise ValueError(f"loss must be 'bce' or 'focal', got {name!r}")


def blend_map_loss(map_logits: torch.Tensor, blend_maps: torch.Tensor) -> torch.Tensor:
    """BCE between a model's (B, h, w) manipulation-map logits and the (B, H, W) blend masks, averaged
    down to the model's map resolution (each cell's target is the pasted share of its pixels)."""
    targets = functional.adaptive_avg_pool2d(blend_maps[:, None].float(), map_logits.shape[-2:])[:, 0]
    return functional.binary_cross_entropy_with_logits(map_logits.float(), targets)
