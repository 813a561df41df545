"""Batched scoring of face crops by a detector: what training's validation, evaluation, calibration and
the predictor share, so every one of them feeds a model exactly the same way.

A clip model scores a single crop as a clip of one face (its per-frame view); `track_clip_logits` gives
its real, clip-level judgement of a video. Both come from one backbone pass per face: `score_crops`
keeps a clip model's per-face embeddings, and the tracks are judged from those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from dfguard.faces.crops import read_crop
from dfguard.faces.tracks import ordered_tracks
from dfguard.models.base import Detector
from dfguard.models.temporal import TemporalDetector
from dfguard.transforms import to_batch


class FaceScores(NamedTuple):
    logits: np.ndarray  # (N,) one per face (a clip model: each face judged alone)
    features: np.ndarray  # (N, D) the decision head's input, for drift monitoring
    # (N, E) a clip model's per-face backbone embeddings, from which `track_clip_logits` judges whole
    # tracks; None for frame models.
    embeddings: np.ndarray | None = None


def _clip_model(model: Detector) -> TemporalDetector:
    if not isinstance(model, TemporalDetector):
        raise ValueError(f"{model.config.get('name', type(model).__name__)} is not a clip model")
    return model


def score_crops(
    model: Detector, crops: Sequence[np.ndarray], batch_size: int = 64, device: str = "cpu"
) -> FaceScores:
    """Logits, features (and a clip model's embeddings) of uint8 BGR crops, in eval mode without
    gradients."""
    logits, features, embeddings = [], [], []
    clip_model = _clip_model(model) if model.clip_model else None
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            batch = to_batch(list(crops[start : start + batch_size]), model.preset).to(device)
            if clip_model is not None:
                embedded = clip_model.embed_frames(batch)
                out = clip_model.judge(embedded.unsqueeze(1))
                embeddings.append(embedded.float().cpu().numpy())
            else:
                out = model(batch)
            logits.append(out.logits.float().cpu().numpy())
            features.append(out.features.float().cpu().numpy())
    model.train(was_training)
    if not logits:
        empty = np.zeros((0, model.feature_dim), np.float32)
        return FaceScores(np.zeros(0, np.float32), empty, empty if model.clip_model else None)
    return FaceScores(
        np.concatenate(logits), np.concatenate(features), np.concatenate(embeddings) if embeddings else None
    )


def score_crop_files(
    model: Detector, paths: Sequence[str], batch_size: int = 64, device: str = "cpu", progress: str = ""
) -> FaceScores:
    """`score_crops` over crop image files, read a batch at a time to bound memory; `progress` labels a
    progress bar over the batches (none when empty)."""
    starts = range(0, len(paths), batch_size)
    parts = [
        score_crops(model, [read_crop(p) for p in paths[start : start + batch_size]], batch_size, device)
        for start in tqdm(starts, desc=progress, unit="batch", disable=not progress)
    ]
    return _concat_scores(parts) if parts else score_crops(model, [], batch_size, device)


def _concat_scores(parts: Sequence[FaceScores]) -> FaceScores:
    """Scores of consecutive batches as one."""
    return FaceScores(
        np.concatenate([part.logits for part in parts]),
        np.concatenate([part.features for part in parts]),
        None if parts[0].embeddings is None else np.concatenate([part.embeddings for part in parts]),
    )


def track_clip_logits(
    model: Detector, faces: pd.DataFrame, embeddings: np.ndarray | None, device: str = "cpu"
) -> pd.Series:
    """One clip-model logit per video (indexed by video_id): each face track's faces, in frame order,
    are one clip, and a video is as suspicious as its most suspicious track (one swapped face in a
    crowd makes a fake). `faces` has columns video_id and frame, and track_id unless each video is one
    track; `embeddings` holds row i's backbone embedding in row i (`score_crops(...).embeddings`)."""
    clip_model = _clip_model(model)
    if embeddings is None or len(embeddings) != len(faces):
        raise ValueError(
            f"a clip model judges tracks from their faces' embeddings: need {len(faces)}, got "
            f"{'none' if embeddings is None else len(embeddings)} (score the faces with `score_crops`)"
        )
    logits: dict[object, float] = {}
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for video, ordered in ordered_tracks(faces):
            clip = torch.from_numpy(embeddings[ordered]).unsqueeze(0).to(device)
            logit = float(clip_model.judge(clip).logits.float().item())
            logits[video] = max(logits.get(video, -np.inf), logit)
    model.train(was_training)
    return pd.Series(logits, name="logit", dtype=np.float64).rename_axis("video_id")
