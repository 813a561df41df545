"""`dfguard evaluate`: a model's metrics on one split of a face dataset, the way the field reports them.

The stored crops of the split are scored through the Predictor (so evaluation feeds the model exactly
as serving does). Every face of a frame counts, as at serving time: a frame scores its most suspicious
face, a video aggregates its frames by the model's rule. Outputs, in `out_dir`:
    metrics.json        video- and frame-level metrics, per manipulation method, per compression and
                        per identity (the person the clip shows)
    videos.parquet      one row per video: label, method, compression, identity, logit, probability,
                        verdict
    roc.csv, pr.csv, reliability.csv    plot data for `dvc plots show`
    roc.png, pr.png, reliability.png, identities.png

`within_identity_auc` (the mean of the per-identity AUCs) next to the overall AUC tells two failures
apart: a model that ranks each person's fakes above that person's reals but gives every person a
different baseline has a high within-identity AUC and a low overall one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from dfguard.calibration import UNCERTAIN
from dfguard.config import EvaluateConfig, save_resolved
from dfguard.inference.predictor import Predictor
from dfguard.ingest.manifest import manifest_columns
from dfguard.metrics import (
    METRICS_NAME,
    bootstrap_interval,
    confusion_matrix,
    ece_if_calibrated,
    expected_calibration_error,
    metrics_by_group,
    precision_recall_curve,
    reliability_data,
    roc_auc,
    roc_curve,
    summary_metrics,
)
from dfguard.models.aggregation import score_split as score_split_appearance
from dfguard.plots import (
    plot_precision_recall,
    plot_reliability,
    plot_roc,
    plot_scores_by_group,
)

VIDEOS_NAME = "videos.parquet"
FRAMES_NAME = "frames.parquet"  # every frame judged as a photo: identity, target, probability, verdict
INTERVAL_LEVEL, INTERVAL_RESAMPLES = 0.95, 1000


@dataclass(frozen=True)
class EvaluateResult:
    out_dir: Path
    metrics: dict[str, Any]


def score_split(
    predictor: Predictor, faces_dir: str | Path, split: str, progress: bool = True
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every face of a split of the face dataset with its logit (columns of faces.parquet + `target`,
    `logit`), and one row per video (target, method, drift, the aggregated logit with the motion
    evidence fused in as the predictor fuses it)."""
    faces, videos = score_split_appearance(
        predictor.model, predictor.frame_rule, faces_dir, split, predictor.device, progress
    )
    return faces, predictor.fused(videos).reset_index()


def run_evaluate(cfg: EvaluateConfig, progress: bool = True) -> EvaluateResult:
    predictor = Predictor(cfg.model_dir)
    if cfg.aggregation:
        if predictor.model.clip_model:
            raise ValueError(f"{cfg.model_dir} holds a clip model: it judges whole clips, not frames")
        predictor.aggregation = {"frames": cfg.aggregation}
    faces, videos = score_split(predictor, cfg.faces_dir, cfg.split, progress)
    from_manifest = manifest_columns(
        cfg.manifest_path, videos["video_id"], ["compression", "target_identity"]
    )
    videos["compression"] = from_manifest["compression"]
    videos["identity"] = from_manifest["target_identity"]
    appearance = videos.get("appearance_logit", videos["logit"]).to_numpy()
    drift = videos["drift"].to_numpy(np.float64)
    n_frames = videos["n_frames"].to_numpy()
    videos["probability"] = predictor.probabilities(appearance, drift, n_frames)
    videos["verdict"] = predictor.verdicts(videos["probability"].to_numpy(), drift, n_frames)
    frames = faces.groupby(["video_id", "frame"], sort=False).agg(
        logit=("logit", "max"), target=("target", "first")
    )
    # A frame's score: its own appearance with its video's motion evidence, as `detect` reports it.
    frame_video, per_video = frames.index.get_level_values("video_id"), videos.set_index("video_id")
    frames["probability"] = predictor.probabilities(
        frames["logit"].to_numpy(),
        frame_video.map(per_video["drift"]).to_numpy(np.float64),
        frame_video.map(per_video["n_frames"]).to_numpy(),
    )
    threshold = predictor.calibrator.threshold if predictor.calibrator else 0.5

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y, p = videos["target"].to_numpy(), videos["probability"].to_numpy()
    decided = (videos["verdict"] != UNCERTAIN).to_numpy()
    metrics = {
        "split": cfg.split,
        "model": predictor.identity,
        "video": clean_floats(summary_metrics(y, p, threshold)),
        "video_uncalibrated": clean_floats(summary_metrics(y, expit(videos["logit"].to_numpy()), 0.5)),
        "frame": clean_floats(summary_metrics(frames["target"], frames["probability"], threshold)),
        "confusion_matrix": {"rows_true_cols_predicted": confusion_matrix(y, p, threshold).tolist()},
        "uncertain_fraction": float(np.mean(~decided)),
        # What the UNCERTAIN band buys: accuracy on the videos that do get a verdict.
        "decided_accuracy": float(np.mean((p >= threshold)[decided] == (y[decided] == 1)))
        if decided.any()
        else None,
        **breakdowns(videos, threshold),
        **evidence_aucs(videos),
        "photo": _photo_metrics(predictor, frames),
    }
    (out / METRICS_NAME).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    videos.to_parquet(out / VIDEOS_NAME, index=False)
    _photo_frames(predictor, frames, per_video).to_parquet(out / FRAMES_NAME, index=False)
    _plots(out, y, p, videos, threshold)
    save_resolved(cfg, out)
    return EvaluateResult(out, metrics)


def _photo_frames(predictor: Predictor, frames: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """The split's frames judged as photos (`_photo_metrics`), one row each with the video's person:
    what the loop's per-person check compares. Empty for a model without a photo calibration."""
    columns = ["video_id", "frame", "identity", "target", "probability", "verdict"]
    photo = predictor.photo_calibrator
    if photo is None:
        return pd.DataFrame(columns=columns)
    table = frames.reset_index()
    table["identity"] = table["video_id"].map(videos["identity"])
    table["probability"] = photo.apply(table["logit"].to_numpy())
    table["verdict"] = [photo.verdict(float(p)) for p in table["probability"]]
    return table[columns]


def _photo_metrics(predictor: Predictor, frames: pd.DataFrame) -> dict[str, Any] | None:
    """The split's frames judged one at a time, as photos are (each frame's most suspicious face, by
    its appearance, on the photo calibration): what a client sending stills can expect. None for a
    model without a photo calibration."""
    photo = predictor.photo_calibrator
    if photo is None:
        return None
    y, p = frames["target"].to_numpy(), photo.apply(frames["logit"].to_numpy())
    decided = np.array([photo.verdict(float(v)) != UNCERTAIN for v in p])
    reals = y == 0
    return {
        **clean_floats(summary_metrics(y, p, photo.threshold)),
        "uncertain_fraction": round(float(np.mean(~decided)), 6),
        # Real stills judged FAKE, among the real stills that got a verdict.
        "real_false_positive_rate": round(float(np.mean(p[reals & decided] >= photo.threshold)), 6)
        if (reals & decided).any()
        else None,
    }


def evidence_aucs(videos: pd.DataFrame) -> dict[str, float | None]:
    """The video AUC of each kind of evidence alone: the detector's appearance logit, and the faces'
    drift against the head around them (`inference.motion`; videos without a track of two faces are
    left out of it)."""
    y = videos["target"].to_numpy()
    appearance = videos.get("appearance_logit", videos["logit"]).to_numpy()
    measured = videos["drift"].notna().to_numpy()
    defined = y.min() != y.max()
    motion_defined = measured.any() and y[measured].min() != y[measured].max()
    return {
        "appearance_video_auc": round(roc_auc(y, appearance), 6) if defined else None,
        "motion_video_auc": round(roc_auc(y[measured], videos["drift"].to_numpy()[measured]), 6)
        if motion_defined
        else None,
    }


def breakdowns(videos: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Video metrics per manipulation method, compression and identity, the within-identity AUC, the
    bootstrap intervals and the ECE a perfectly calibrated model would show here, from a table with
    columns target, probability, method, compression, identity."""
    by_identity = _groups(videos, "identity", "grouped", threshold)
    y, p = videos["target"].to_numpy(), videos["probability"].to_numpy()
    return {
        "by_method": _groups(videos, "method", "shared", threshold),
        "by_compression": _groups(videos, "compression", "grouped", threshold),
        "by_identity": by_identity,
        "within_identity_auc": _mean_defined([group["auc"] for group in by_identity.values()]),
        "video_interval": _intervals(y, p, videos["identity"].to_numpy()),
        # Whether the ECE measured can tell this model from a perfectly calibrated one on this sample.
        "ece_if_calibrated": clean_floats(
            ece_if_calibrated(p, expected_calibration_error(y, p), INTERVAL_RESAMPLES, INTERVAL_LEVEL)
        ),
    }


def _intervals(y: np.ndarray, p: np.ndarray, identities: np.ndarray) -> dict[str, Any] | None:
    """95% bootstrap intervals of the video AUC and ECE: resampling videos, and resampling whole people
    (the honest one when a split holds few people: their clips share an offset). None with one class."""
    if y.min() == y.max():
        return None
    groupings: dict[str, np.ndarray | None] = {"videos": None}
    if len(set(identities) - {"unknown"}) > 1:
        groupings["identities"] = identities
    intervals: dict[str, Any] = {"level": INTERVAL_LEVEL, "resamples": INTERVAL_RESAMPLES, "identities": None}
    for name, groups in groupings.items():
        bounds = {}
        for metric, function in (("auc", roc_auc), ("ece", expected_calibration_error)):
            low, high = bootstrap_interval(y, p, function, groups, INTERVAL_RESAMPLES, INTERVAL_LEVEL)
            bounds |= {f"{metric}_low": round(low, 6), f"{metric}_high": round(high, 6)}
        intervals[name] = bounds
    return intervals


def _mean_defined(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return round(float(np.mean(defined)), 6) if defined else None


def _groups(videos: pd.DataFrame, by: str, reals: str, threshold: float) -> dict[str, dict[str, float]]:
    table = videos.rename(columns={"target": "label"})
    if reals == "shared":
        table = table[(table["label"] == 0) | (table[by] != "")]
    grouped = metrics_by_group(table, by, reals=reals, threshold=threshold)  # type: ignore[arg-type]
    return {str(row[by]): clean_floats(row.drop(by).to_dict()) for _, row in grouped.iterrows()}


def clean_floats(values: dict[str, Any]) -> dict[str, float | None]:
    """JSON-safe floats: NaN (a metric undefined for one class) becomes null."""
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else round(float(v), 6)) for k, v in values.items()
    }


def _plots(out: Path, y: np.ndarray, p: np.ndarray, videos: pd.DataFrame, threshold: float) -> None:
    fpr, tpr, _ = roc_curve(y, p)
    pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(out / "roc.csv", index=False)
    precision, recall, _ = precision_recall_curve(y, p)
    pd.DataFrame({"recall": recall, "precision": precision}).to_csv(out / "pr.csv", index=False)
    data = reliability_data(y, p)
    filled = data.counts > 0
    pd.DataFrame(
        {
            "mean_probability": data.mean_probability[filled],
            "fake_fraction": data.fake_fraction[filled],
            "count": data.counts[filled],
        }
    ).to_csv(out / "reliability.csv", index=False)
    curves = {"all fakes": (y, p)}
    for method, fakes in videos[videos["target"] == 1].groupby("method"):
        reals = videos[videos["target"] == 0]
        both = pd.concat([reals, fakes])
        curves[str(method)] = (both["target"].to_numpy(), both["probability"].to_numpy())
    plot_roc(curves, out / "roc.png", title="ROC, video level")
    plot_precision_recall(curves, out / "pr.png", title="Precision-recall, video level")
    plot_reliability({"video": (y, p)}, out / "reliability.png")
    plot_scores_by_group(videos, "identity", out / "identities.png", threshold)
