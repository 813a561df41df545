"""`dfguard learning-curve`: cross-validated accuracy against the number of people trained on.

A detector that misses its target on a small corpus leaves one question open: would more people of
the same kind close the gap, or is the method the limit? Running the same cross-validation with each
fold training on a growing share of its training people (`crossval.thin_training`; validation and test
people unchanged) answers it with a curve: pooled held-out video AUC, with its interval over people,
per manipulation method and within-person, against the mean number of training people.

Outputs, in `out_dir`: `learning_curve.json` (one point per share), `learning_curve.png` and
`share-<s>/` (that share's full cross-validation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dfguard.config import Config
from dfguard.plots import plot_learning_curve
from dfguard.studies.crossval import run_crossval

RESULT_NAME = "learning_curve.json"
PLOT_NAME = "learning_curve.png"


@dataclass(frozen=True)
class LearningCurveResult:
    out_dir: Path
    points: list[dict[str, Any]]


def curve_point(metrics: dict[str, Any]) -> dict[str, Any]:
    """The figures of one cross-validation (`crossval.json`) that the curve plots."""
    interval = (metrics.get("video_interval") or {}).get("identities") or {}
    return {
        "train_share": metrics["train_share"],
        "train_people_mean": round(float(np.mean([f["train_people"] for f in metrics["per_fold"]])), 2),
        "video_auc": metrics["video"]["auc"],
        "video_auc_low": interval.get("auc_low"),
        "video_auc_high": interval.get("auc_high"),
        "video_ece": metrics["video"]["ece"],
        "within_identity_auc": metrics["within_identity_auc"],
        "auc_by_method": {
            method: group["auc"]
            for method, group in metrics["by_method"].items()
            if method and group["auc"] is not None
        },
        "fold_auc_mean": metrics["fold_auc_mean"],
        "fold_auc_std": metrics["fold_auc_std"],
    }


def run_learning_curve(
    cfg: Config,
    shares: list[float],
    folds: int,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
) -> LearningCurveResult:
    """One `run_crossval` per share of training people (smallest first), then the curve."""
    if not shares:
        raise ValueError("a learning curve needs at least one share of training people")
    out = Path(out_dir)
    points = []
    for share in sorted(set(shares)):
        if progress:
            print(f"learning curve: training on {share:.0%} of each fold's training people", flush=True)
        result = run_crossval(cfg, folds, out / f"share-{share:g}", seed, progress, train_share=share)
        points.append(curve_point(result.metrics))
    summary = {"model": cfg.train.model, "folds": folds, "seed": seed, "points": points}
    (out / RESULT_NAME).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_learning_curve(points, out / PLOT_NAME, title=f"{cfg.train.model}: held-out AUC by training people")
    return LearningCurveResult(out, points)
