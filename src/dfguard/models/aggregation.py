"""How a model turns its faces' scores into a video's: the aggregation rule a model records in its
config (`aggregation.frames`), which training, calibration, evaluation and the predictor all apply."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from dfguard.faces.crops import read_crop
from dfguard.faces.motion import video_drift
from dfguard.faces.table import read_faces
from dfguard.models.base import Detector
from dfguard.models.scoring import score_crop_files, track_clip_logits

AggregationRule = Literal["mean", "max", "confident"]


def rule_of(aggregation: dict[str, str]) -> AggregationRule:
    """The frame rule of a model config's `aggregation` section (mean when it names none)."""
    return aggregation.get("frames", "mean")  # type: ignore[return-value]


def confident_mean(
    probabilities: np.ndarray,
    fake_above: float = 0.8,
    real_below: float = 0.2,
    min_fake_fraction: float = 0.4,
    min_real_fraction: float = 0.9,
) -> float:
    """The DFDC winner's video rule (Seferbekov, 2020), with its constants as fractions.

    If more than `min_fake_fraction` of the frames are confidently fake (> `fake_above`), the video
    score is the mean of those frames: a manipulation often shows on only part of a clip, and the
    plain mean would dilute it. Otherwise, if more than `min_real_fraction` of frames are confidently
    real (< `real_below`), it is the mean of those (a few noisy frames should not raise a clear real).
    Otherwise, the mean of all frames. (The original used "more than 32 / 2.5 and more than 11 of 32
    frames", which at 32 frames is the 0.4 fraction here.)
    """
    p = np.asarray(probabilities, dtype=np.float64)
    confident_fake = p > fake_above
    confident_real = p < real_below
    if confident_fake.sum() > min_fake_fraction * p.size:
        return float(p[confident_fake].mean())
    if confident_real.sum() > min_real_fraction * p.size:
        return float(p[confident_real].mean())
    return float(p.mean())


def aggregate_video_scores(
    frame_table: pd.DataFrame,
    rule: AggregationRule = "mean",
    score_col: str = "probability",
    video_col: str = "video_id",
    frame_col: str = "frame",
    carry: tuple[str, ...] = (),
) -> pd.DataFrame:
    """Video-level scores from a table with one row per face: the faces of a frame are reduced by max
    (one fake face makes the frame fake), then the frames of a video by `rule` ("mean", "max" or
    "confident", see `confident_mean`).

    Rows with a missing score (no usable face) are ignored; a video with none gets a NaN score.
    Returns one row per video: `video_col`, `score_col`, `n_frames`, and the `carry` columns (their
    first value per video, e.g. label or method).
    """
    reducers = {"mean": "mean", "max": "max", "confident": confident_mean}
    if rule not in reducers:
        raise ValueError(f"unknown aggregation rule {rule!r}: expected one of {sorted(reducers)}")
    scored = frame_table.dropna(subset=[score_col])
    per_frame = scored.groupby([video_col, frame_col], sort=False)[score_col].max()
    per_video = per_frame.groupby(level=0, sort=False).agg([reducers[rule], "size"])
    per_video.columns = [score_col, "n_frames"]
    videos = pd.Index(frame_table[video_col].unique(), name=video_col)
    result = per_video.reindex(videos)
    result["n_frames"] = result["n_frames"].fillna(0).astype(np.int64)
    if carry:
        result = result.join(frame_table.groupby(video_col, sort=False)[list(carry)].first())
    return result.reset_index()


def video_appearance(
    model: Detector,
    rule: AggregationRule,
    faces: pd.DataFrame,
    carry: tuple[str, ...] = (),
    embeddings: np.ndarray | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Per-video logits of the detector's appearance evidence, from a table of face logits (columns
    video_id, frame, logit): one row per video with video_id, n_frames, the `carry` columns and logit.

    A frame model: the most suspicious face per frame, then the frames by `rule`. A clip model judges
    each face track as one clip instead (`track_clip_logits`: the table also needs track_id, and
    `embeddings` the faces' embeddings from `score_crops`, row for row)."""
    table = faces.assign(probability=expit(faces["logit"].to_numpy(np.float64)))
    videos = aggregate_video_scores(table, "mean" if model.clip_model else rule, carry=carry)
    if model.clip_model:
        clips = track_clip_logits(model, faces, embeddings, device)
        videos["logit"] = videos["video_id"].map(clips)
    else:
        videos["logit"] = logit(np.clip(videos["probability"].to_numpy(np.float64), 1e-7, 1 - 1e-7))
    return videos.drop(columns="probability")


def crop_drift(faces: pd.DataFrame, folder: str | Path, progress: str = "") -> pd.Series:
    """Per video_id, the drift of its face tracks (`faces.motion.video_drift`), read from the crop files
    of column `crop` under the face dataset `folder`."""
    paths = faces["crop"].to_numpy()
    return video_drift(faces, lambda row: read_crop(str(Path(folder) / paths[row])), progress)


def score_split(
    model: Detector,
    rule: AggregationRule,
    faces_dir: str | Path,
    split: str,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A model's appearance evidence on one split of a face dataset: every face of the split with its
    `logit` (the columns of faces.parquet, `target`, `logit`), and one row per video (`video_appearance`
    carrying target and method, and the faces' `drift`)."""
    faces = read_faces(faces_dir, split)
    paths = [str(Path(faces_dir) / crop) for crop in faces["crop"]]
    scores = score_crop_files(model, paths, device=device, progress=f"score {split}" if progress else "")
    faces["logit"] = scores.logits
    drift = crop_drift(faces, faces_dir, progress=f"motion {split}" if progress else "")
    videos = video_appearance(model, rule, faces, ("target", "method"), scores.embeddings, device)
    videos["drift"] = videos["video_id"].map(drift).astype(np.float64)
    return faces, videos
