"""Batched scoring of face crops by a detector: what training's validation, evaluation, calibration and
the predictor share, so every one of them feeds a model exactly the same way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dfguard.faces.crops import read_crop
from dfguard.models.base import Detector
from dfguard.transforms import to_batch


def score_crops(
    model: Detector, crops: Sequence[np.ndarray], batch_size: int = 64, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N,) and features (N, D) of uint8 BGR crops, in eval mode without gradients."""
    logits, features = [], []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = to_batch(list(crops[start : start + batch_size]), model.preset).to(device)
            out = model(batch)
            logits.append(out.logits.float().cpu().numpy())
            features.append(out.features.float().cpu().numpy())
    model.train(was_training)
    if not logits:
        return np.zeros(0, np.float32), np.zeros((0, model.feature_dim), np.float32)
    return np.concatenate(logits), np.concatenate(features)


def score_crop_files(
    model: Detector, paths: Sequence[str], batch_size: int = 64, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """`score_crops` over crop image files, read a batch at a time to bound memory."""
    logits, features = [], []
    for start in range(0, len(paths), batch_size):
        batch_logits, batch_features = score_crops(
            model, [read_crop(p) for p in paths[start : start + batch_size]], batch_size, device
        )
        logits.append(batch_logits)
        features.append(batch_features)
    if not logits:
        return score_crops(model, [], batch_size, device)
    return np.concatenate(logits), np.concatenate(features)
