"""Batched scoring of face crops by a detector: what training's validation, evaluation, calibration and
the predictor share, so every one of them feeds a model exactly the same way.

A clip model scores a single crop as a clip of one face (its per-frame view); `track_clip_logits` gives
its real, clip-level judgement of a video.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from dfguard.faces.crops import read_crop
from dfguard.models.base import Detector, single_face_input
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
            out = model(single_face_input(model, batch))
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


def track_keys(faces: pd.DataFrame) -> list[str]:
    """The columns that name a face track: video_id and track_id, or video_id alone in tables of one
    track per video (a face dataset's subject faces made without tracking)."""
    return ["video_id", "track_id"] if "track_id" in faces else ["video_id"]


def track_clip_logits(
    model: Detector, faces: pd.DataFrame, load_crop: Callable[[int], np.ndarray], device: str = "cpu"
) -> pd.Series:
    """One clip-model logit per video (indexed by video_id): each face track's crops, in frame order,
    are one clip, and a video is as suspicious as its most suspicious track (one swapped face in a
    crowd makes a fake). `faces` has columns video_id and frame, and track_id unless each video is one
    track; `load_crop(label)` returns the crop of the row with that index label. Crops are loaded one
    track at a time to bound memory."""
    if not model.clip_model:
        raise ValueError(f"{model.config.get('name', type(model).__name__)} is not a clip model")
    logits: dict[object, float] = {}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for key, track in faces.groupby(track_keys(faces), sort=False):
            video = key[0]
            crops = [load_crop(label) for label in track.sort_values("frame").index]
            clip = to_batch(crops, model.preset).unsqueeze(0).to(device)
            logit = float(model(clip).logits.float().item())
            logits[video] = max(logits.get(video, -np.inf), logit)
    model.train(was_training)
    return pd.Series(logits, name="logit", dtype=np.float64).rename_axis("video_id")
