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


def grad_cam(model: Detector, crops: list[np.ndarray], device: str = "cpu") -> np.ndarray:
    """Heat maps in [0, 1], one per crop, each the crop's size (N, H, W), of the evidence for the side
    (fake if its logit >= 0, else real) each crop is scored on."""
    # On a private copy: a hook on the shared model would catch other threads' forward passes (the
    # service judges several requests at once), and the backward pass would leave gradients on it.
    model = copy.deepcopy(model)
    layer = last_conv(model)
    captured: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        output.retain_grad()
        captured["activations"] = output

    handle = layer.register_forward_hook(keep)
    model.eval()
    try:
        batch = to_batch(crops, model.preset).to(device).requires_grad_(True)
        with torch.enable_grad():
            logits = model(single_face_input(model, batch)).logits
            logits.abs().sum().backward()  # d|z|/dz is the sign: the predicted class's score
    finally:
        handle.remove()
    activations = captured["activations"]
    weights = activations.grad.mean(dim=(2, 3), keepdim=True)
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
