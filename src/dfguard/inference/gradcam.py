"""Grad-CAM (Selvaraju et al. 2017): where in a face crop the evidence for the model's call lies (a clip
model reads each crop as a clip of one face).

The heat map is the last convolution's activations weighted by the mean gradient of the predicted
class's score with respect to each channel, kept where positive, upsampled to the crop. With one
logit z, the score of "fake" is z and that of "real" is -z: a face scored fake shows its fake evidence,
one scored real its real evidence. (Explaining "fake" on a face scored real mostly gives an empty map,
and normalising that to its own peak would make noise look like evidence.)
"""

from __future__ import annotations

import copy

import cv2
import numpy as np
import torch
from torch import nn

from dfguard.models.base import Detector, single_face_input
from dfguard.transforms import to_batch


def last_conv(model: Detector) -> nn.Conv2d:
    convs = [m for m in model.backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no convolution to explain")
    return convs[-1]


def _activations_and_logits(model: Detector, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations (B, C, h, w), logits (B,)) of one forward pass, with the graph between them.

    A model whose backbone has no gradients (an INT8 graph) gives them through its fp32 twin
    (`gradient_twin`), whose weights are frozen and which returns its map: nothing is hooked or
    accumulated on it, so concurrent requests share it. Any other model runs as a private copy with a
    hook on its last convolution: a hook on the shared model would catch other threads' forward passes
    (the service judges several requests at once), and the backward pass would leave gradients on it.
    """
    make_twin = getattr(model, "gradient_twin", None)
    if make_twin is not None:
        out, grid = make_twin()(batch)
        return grid, out.logits
    model = copy.deepcopy(model).eval()
    captured: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        captured["activations"] = output

    handle = last_conv(model).register_forward_hook(keep)
    try:
        logits = model(single_face_input(model, batch)).logits
    finally:
        handle.remove()
    return captured["activations"], logits


def grad_cam(model: Detector, crops: list[np.ndarray], device: str = "cpu") -> np.ndarray:
    """Heat maps in [0, 1], one per crop, each the crop's size (N, H, W), of the evidence for the side
    (fake if its logit >= 0, else real) each crop is scored on."""
    batch = to_batch(crops, model.preset).to(device).requires_grad_(True)  # a frozen model still has a path
    with torch.enable_grad():
        activations, logits = _activations_and_logits(model, batch)
        # d|z|/dz is the sign: the gradient of the predicted class's score.
        (gradient,) = torch.autograd.grad(logits.abs().sum(), activations)
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cams = torch.relu((weights * activations).sum(dim=1)).detach().float().cpu().numpy()
    height, width = crops[0].shape[:2]
    maps = []
    for cam in cams:
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
        peak = cam.max()
        maps.append(cam / peak if peak > 0 else cam)
    return np.stack(maps).astype(np.float32)


def overlay(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The crop with the heat map drawn over it (BGR uint8)."""
    colour = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(crop, 1.0 - alpha, colour, alpha, 0.0)
