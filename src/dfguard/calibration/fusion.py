"""The motion fusion: the drift of a video's faces against the heads around them (`faces.motion`) added to
a detector's video logit, as a logistic regression on the detector's logit and log drift, fitted on the
validation videos when the model is calibrated. Items without motion (a photo, a track of one face) get
the appearance evidence at the validation videos' mean drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

# Added to the drift (crop pixels) before its log: below this the two fits agree to within ECC's noise.
DRIFT_FLOOR = 0.05


def log_drift(drift: np.ndarray) -> np.ndarray:
    return np.log(np.asarray(drift, np.float64) + DRIFT_FLOOR)


@dataclass(frozen=True)
class MotionFusion:
    """fused logit = appearance_weight * logit + drift_weight * log drift + bias."""

    appearance_weight: float
    drift_weight: float
    bias: float
    missing_log_drift: float  # stands in for the log drift of items without motion

    def fuse(self, logits: np.ndarray, drift: np.ndarray) -> np.ndarray:
        measured = log_drift(drift)
        measured = np.where(np.isnan(measured), self.missing_log_drift, measured)
        return (
            self.appearance_weight * np.asarray(logits, np.float64) + self.drift_weight * measured + self.bias
        )


def fit_motion_fusion(
    logits: np.ndarray, drift: np.ndarray, labels: np.ndarray, l2: float = 1.0
) -> MotionFusion:
    """The logistic regression of `labels` on (logit, log drift), with an L2 penalty of `l2` on the
    weights of the standardised inputs: on a few dozen validation videos the drift alone may separate
    them, and an unpenalised fit would then push its weight to infinity. Videos without a drift are
    left out of the fit."""
    z = np.asarray(logits, np.float64)
    d = log_drift(drift)
    y = np.asarray(labels, np.int64)
    known = ~np.isnan(d)
    if not known.any():
        raise ValueError("no validation video has a measurable motion: cannot fit the motion fusion")
    if y[known].min() == y[known].max():
        raise ValueError("the validation videos with a measurable motion need both real and fake ones")
    x = np.column_stack([z[known], d[known]])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    # scikit-learn minimises the summed log-loss + ||w||^2 / (2 C), the intercept unpenalised: C = 1 / l2.
    # Its default tolerance stops ~1e-3 short of the optimum; this one reaches it to ~1e-7.
    model = LogisticRegression(C=1.0 / l2 if l2 > 0 else np.inf, tol=1e-10, max_iter=10_000)
    model.fit((x - mean) / std, y[known])
    weights = model.coef_[0] / std
    return MotionFusion(
        appearance_weight=float(weights[0]),
        drift_weight=float(weights[1]),
        bias=float(model.intercept_[0] - weights @ mean),
        missing_log_drift=float(mean[1]),
    )
