"""Evaluation: metrics (pure numpy), video-level aggregation, per-group breakdowns and plots.

`dfguard.evaluation.plots` imports matplotlib, so it is not imported here.
"""

from dfguard.evaluation.metrics import (
    ECE_BINS,
    ReliabilityData,
    aggregate_video_scores,
    average_precision,
    bootstrap_interval,
    brier_score,
    confident_mean,
    confusion_matrix,
    ece_if_calibrated,
    equal_error_rate,
    expected_calibration_error,
    log_loss,
    metrics_by_group,
    precision_recall_curve,
    reliability_data,
    roc_auc,
    roc_curve,
    summary_metrics,
    threshold_metrics,
)

__all__ = [
    "ECE_BINS",
    "ReliabilityData",
    "aggregate_video_scores",
    "average_precision",
    "bootstrap_interval",
    "brier_score",
    "confident_mean",
    "confusion_matrix",
    "ece_if_calibrated",
    "equal_error_rate",
    "expected_calibration_error",
    "log_loss",
    "metrics_by_group",
    "precision_recall_curve",
    "reliability_data",
    "roc_auc",
    "roc_curve",
    "summary_metrics",
    "threshold_metrics",
]
