"""The two sides of a drift report, one row per media item with the same columns
(`drift.report`): the champion's view of its own training and validation faces (reference), and the
predictions it served in a window (current).

Both rows carry the mean face embedding the detector's head sees, the fake probability, the medians of
the faces' quality measures and the media kind: a detector fails first on faces unlike those it learnt
from, and the embedding shows that before any label arrives.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from dfguard.calibration.temperature import Calibrator
from dfguard.faces.table import read_faces
from dfguard.feedback import QUALITY_KEYS, PredictionStore
from dfguard.inference.predictor import STATUSES
from dfguard.models.io import load_detector
from dfguard.models.scoring import score_crop_files

EMBEDDING_PREFIX = "emb_"
REFERENCE_NAME = "reference-{digest}.parquet"


def _embedding_columns(features: np.ndarray) -> dict[str, np.ndarray]:
    return {f"{EMBEDDING_PREFIX}{i}": features[:, i] for i in range(features.shape[1])}


def reference_frame(
    model_dir: str | Path,
    faces_dir: str | Path,
    cache_dir: str | Path,
    splits: tuple[str, ...] = ("train", "val"),
) -> pd.DataFrame:
    """The model's view of the faces it was trained and selected on, one row per video: scored once
    per model and face dataset, then read from `cache_dir` (scoring a few thousand faces takes a
    minute on 2 cores; a loop run every few hours should not pay it each time)."""
    model, config = load_detector(model_dir)
    faces = read_faces(faces_dir, subject_only=True)
    faces = faces[faces["split"].isin(splits)].reset_index(drop=True)
    digest = _digest(config, faces)
    cached = Path(cache_dir) / REFERENCE_NAME.format(digest=digest)
    if cached.is_file():
        return pd.read_parquet(cached)
    paths = [str(Path(faces_dir) / crop) for crop in faces["crop"]]
    scores = score_crop_files(model.eval(), paths)
    calibration = config.get("calibration")
    per_face = pd.DataFrame(
        {
            "video_id": faces["video_id"],
            "frame": faces["frame"],
            "p": expit(scores.logits),
            **{key: faces[key].astype("float64") for key in QUALITY_KEYS if key in faces},
            **_embedding_columns(scores.features),
        }
    )
    grouped = per_face.groupby("video_id", sort=False)
    frame = grouped.mean(numeric_only=True)
    quality = [key for key in QUALITY_KEYS if key in per_face]
    frame[quality] = grouped[quality].median()
    # As the predictor judges an item: the mean face probability as a logit, then the calibration.
    mean_logit = logit(np.clip(frame["p"].to_numpy(), 1e-7, 1 - 1e-7))
    frame["probability"] = (
        Calibrator.from_dict(calibration).apply(mean_logit) if calibration else expit(mean_logit)
    )
    frame["media_kind"] = np.where(grouped["frame"].nunique() > 1, "video", "image")
    frame = frame.drop(columns=["p", "frame"]).reset_index(drop=True)
    for key in QUALITY_KEYS:
        if key not in frame:
            frame[key] = np.nan
    cached.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(cached, index=False)
    return frame


def current_frame(
    store: PredictionStore,
    window_days: float,
    last: int = 0,
    now: datetime | None = None,
    model_version: str | None = None,
) -> pd.DataFrame:
    """The judged predictions of the window, one row per prediction: the last `last` when > 0, else
    those of the last `window_days` days; only `model_version`'s when given (another model's
    embeddings live in another space). Predictions stored without features are left out."""
    if last > 0:
        listed = store.predictions(limit=last, model_version=model_version)
    else:
        since = (now or datetime.now(UTC)) - timedelta(days=window_days)
        listed = store.predictions(since=since, model_version=model_version)
    listed = listed[~listed["verdict"].isin(STATUSES) & listed["features"].notna()].reset_index(drop=True)
    if listed.empty:
        return pd.DataFrame(columns=["probability", *QUALITY_KEYS, "media_kind"])
    sizes = set(listed["features"].map(len))
    if len(sizes) > 1:
        raise ValueError(
            f"the window's predictions carry embeddings of {len(sizes)} sizes ({sorted(sizes)}): several "
            "models made them; pass model_version to compare one model's"
        )
    features = np.asarray(listed["features"].tolist(), dtype=np.float64)
    return pd.DataFrame(
        {
            "probability": listed["probability"].astype("float64"),
            **{key: listed[key].astype("float64") for key in QUALITY_KEYS},
            "media_kind": listed["media_kind"],
            **_embedding_columns(features),
        }
    )


def _digest(config: dict, faces: pd.DataFrame) -> str:
    fingerprint = json.dumps(config, sort_keys=True) + "|" + "|".join(faces["crop"].astype(str))
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
