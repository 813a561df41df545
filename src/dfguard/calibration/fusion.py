"""The motion fusion: the drift of a video's faces against the heads around them (`faces.motion`) added to
a detector's video logit, as a logistic regression on the detector's logit and log drift, fitted on the
validation videos when the model is calibrated. Items without motion (a photo, a track of one face) get
the appearance evidence at the validation videos' mean drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from dfguard.calibration.temperature import binary_nll

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
    y = np.asarray(labels, np.float64)
    known = ~np.isnan(d)
    if not known.any():
        raise ValueError("no validation video has a measurable motion: cannot fit the motion fusion")
    x = np.column_stack([z[known], d[known]])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    xs, yk = (x - mean) / std, y[known]

    def loss(params: np.ndarray) -> float:
        nll = yk.size * binary_nll(xs @ params[:2] + params[2], yk)
        return nll + 0.5 * l2 * float(params[:2] @ params[:2])

    params = minimize(loss, np.zeros(3), method="L-BFGS-B").x
    weights = params[:2] / std
    return MotionFusion(
        appearance_weight=float(weights[0]),
        drift_weight=float(weights[1]),
        bias=float(params[2] - weights @ mean),
        missing_log_drift=float(mean[1]),
    )
