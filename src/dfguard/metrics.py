"""Detection metrics as functions of `labels` (1 = fake, 0 = real) and scores: scikit-learn's, behind
the checks and conventions the stages rely on, and those it lacks (EER, ECE and its floor, intervals).

Scores are fake probabilities (or any score where larger means "more likely fake"; only the
probability-based metrics, log-loss, Brier and ECE, need true probabilities). A prediction is FAKE
when `score >= threshold`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn import metrics as sk

# The file each stage writes its figures to (calibrate, evaluate), the registry logs and the promotion gate
# reads back.
METRICS_NAME = "metrics.json"
ECE_BINS = 15
PROBABILITY_EPS = 1e-7  # log-loss clipping: a single 0/1 probability on a wrong label is not infinite

ArrayLike = np.ndarray | list[float] | list[int]


def _inputs(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape or y.size == 0:
        raise ValueError(f"labels and scores must be equal-length and non-empty, got {y.size} and {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return y, s


def _both_classes(y: np.ndarray, metric: str) -> None:
    if y.min() == y.max():
        raise ValueError(f"{metric} needs both real and fake samples")


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score from the highest down, plus the (0, 0)
    start at threshold +inf. Tied scores form one point: a threshold cannot split them."""
    y, s = _inputs(labels, scores)
    _both_classes(y, "a ROC curve")
    return sk.roc_curve(y, s, drop_intermediate=False)


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve: the chance a random fake scores above a random real, ties counting
    one half (trapezoids over the tie-grouped curve give exactly that).

    `sklearn.metrics.auc` over the full curve rather than `roc_auc_score`, which integrates a thinned
    curve and so can differ in the last bit: training rounds this AUC to 4 digits to pick its epoch,
    and a value such as 17/32 lies exactly on a rounding boundary."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(sk.auc(fpr, tpr))


def precision_recall_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at each distinct score from the highest down."""
    y, s = _inputs(labels, scores)
    _both_classes(y, "a ROC curve")
    # scikit-learn's order is the reverse (lowest threshold first), with a (precision 1, recall 0)
    # end point that has no threshold; it is dropped here.
    precision, recall, thresholds = sk.precision_recall_curve(y, s)
    return precision[-2::-1], recall[-2::-1], thresholds[::-1]


def average_precision(labels: ArrayLike, scores: ArrayLike) -> float:
    """Sum over thresholds of (recall gain) x precision, the step-wise area."""
    y, s = _inputs(labels, scores)
    _both_classes(y, "a ROC curve")
    return float(sk.average_precision_score(y, s))


def equal_error_rate(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """(EER, threshold): the error rate where false-positive and false-negative rates are equal.

    Between the two ROC points where FNR - FPR changes sign, the rates are interpolated linearly; the
    threshold returned is that of the nearer of the two points (thresholds exist only at scores).
    """
    fpr, tpr, thresholds = roc_curve(labels, scores)
    gap = (1.0 - tpr) - fpr  # decreasing along the curve, from 1 at (0, 0) to -1 at (1, 1)
    i = int(np.argmax(gap <= 0))  # >= 1: gap is 1 at the first point
    if gap[i] == 0:
        return float(fpr[i]), float(thresholds[i])
    frac = gap[i - 1] / (gap[i - 1] - gap[i])
    eer = fpr[i - 1] + frac * (fpr[i] - fpr[i - 1])
    nearer = i if frac >= 0.5 else i - 1
    return float(eer), float(thresholds[nearer])


def confusion_matrix(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """[[TN, FP], [FN, TP]] with FAKE predicted when score >= threshold."""
    y, s = _inputs(labels, scores)
    return sk.confusion_matrix(y, (s >= threshold).astype(np.int64), labels=[0, 1])


def threshold_metrics(labels: ArrayLike, scores: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (fake is the positive class) and the four counts."""
    (tn, fp), (fn, tp) = confusion_matrix(labels, scores, threshold)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": float((tp + tn) / (tn + fp + fn + tp)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "tn": int(tn),
        "fp": int(fp),
        "fn": int(fn),
        "tp": int(tp),
    }


def log_loss(labels: ArrayLike, probabilities: ArrayLike) -> float:
    y, p = _inputs(labels, probabilities)
    p = np.clip(p, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    return float(sk.log_loss(y, p, labels=[0, 1]))


def brier_score(labels: ArrayLike, probabilities: ArrayLike) -> float:
    y, p = _inputs(labels, probabilities)
    return float(sk.brier_score_loss(y, p, labels=[0, 1]))


@dataclass(frozen=True)
class ReliabilityData:
    """Per-bin figures of a reliability diagram over equal-width bins of the fake probability."""

    edges: np.ndarray  # (n_bins + 1,)
    counts: np.ndarray  # (n_bins,) samples per bin
    mean_probability: np.ndarray  # (n_bins,) NaN for empty bins
    fake_fraction: np.ndarray  # (n_bins,) observed frequency of fakes, NaN for empty bins


def _probability_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """The equal-width bin of each probability: [i/n, (i+1)/n), with 1.0 in the last bin."""
    return np.clip((p * n_bins).astype(np.int64), 0, n_bins - 1)


def reliability_data(labels: ArrayLike, probabilities: ArrayLike, n_bins: int = ECE_BINS) -> ReliabilityData:
    """Bin i holds probabilities in [i/n, (i+1)/n); the last bin also holds 1.0."""
    y, p = _inputs(labels, probabilities)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = _probability_bins(p, n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(bins, weights=p, minlength=n_bins) / counts
        fake_fraction = np.bincount(bins, weights=y, minlength=n_bins) / counts
    return ReliabilityData(edges, counts, mean_p, fake_fraction)


def expected_calibration_error(labels: ArrayLike, probabilities: ArrayLike, n_bins: int = ECE_BINS) -> float:
    """ECE of the fake probability: the count-weighted mean over bins of |mean probability - fake
    fraction|. (This is the binary "P(fake)" form, not the top-label-confidence form.)"""
    data = reliability_data(labels, probabilities, n_bins)
    filled = data.counts > 0
    gaps = np.abs(data.mean_probability[filled] - data.fake_fraction[filled])
    return float(np.sum(data.counts[filled] * gaps) / data.counts.sum())


def ece_if_calibrated(
    probabilities: ArrayLike,
    observed_ece: float,
    resamples: int = 1000,
    level: float = 0.95,
    n_bins: int = ECE_BINS,
    seed: int = 0,
) -> dict[str, float]:
    """What ECE a perfectly calibrated model with these probabilities would show on this many samples.

    ECE measured on a few dozen videos is far from 0 even for a perfect model: each bin's fake fraction
    is a small-sample estimate. Labels are drawn as Bernoulli(p) from the probabilities themselves
    (which makes them calibrated by construction) and the ECE of each draw computed ("consistency
    resampling", Broecker & Smith 2007). Returns the mean and the `level` quantile of those ECEs, and
    the p-value of `observed_ece` (the share of draws at least as large): a small p-value is evidence
    of miscalibration; a target ECE below the mean cannot be shown on this sample at all."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if p.size == 0 or not np.all((p >= 0) & (p <= 1)):
        raise ValueError("need at least one probability, all in [0, 1]")
    bins = _probability_bins(p, n_bins)
    probability_sums = np.bincount(bins, weights=p, minlength=n_bins)
    draws = np.random.default_rng(seed).random((resamples, p.size)) < p  # (R, N) labels
    # Per draw and bin: |sum of probabilities - number of fakes|, which is count * |mean p - fraction|.
    # One bincount over all draws: draw r's bin b is slot r * n_bins + b.
    slots = (np.arange(resamples)[:, None] * n_bins + bins).ravel()
    fakes = np.bincount(slots, weights=draws.ravel(), minlength=resamples * n_bins).reshape(resamples, n_bins)
    eces = np.abs(probability_sums - fakes).sum(axis=1) / p.size
    return {
        "mean": float(eces.mean()),
        "high": float(np.quantile(eces, level)),
        "p_value": float((1 + np.sum(eces >= observed_ece - 1e-12)) / (1 + resamples)),
        "resamples": float(resamples),
    }


def summary_metrics(labels: ArrayLike, probabilities: ArrayLike, threshold: float = 0.5) -> dict[str, float]:
    """Every metric above in one flat dict (for MLflow); ranking metrics are NaN with one class only."""
    y, p = _inputs(labels, probabilities)
    both = y.min() != y.max()
    eer, eer_threshold = equal_error_rate(y, p) if both else (float("nan"), float("nan"))
    return {
        "n": float(y.size),
        "n_fake": float(y.sum()),
        "auc": roc_auc(y, p) if both else float("nan"),
        "average_precision": average_precision(y, p) if both else float("nan"),
        "eer": eer,
        "eer_threshold": eer_threshold,
        "log_loss": log_loss(y, p),
        "brier": brier_score(y, p),
        "ece": expected_calibration_error(y, p),
        "threshold": float(threshold),
        **{k: float(v) for k, v in threshold_metrics(y, p, threshold).items()},
    }


def bootstrap_interval(
    labels: ArrayLike,
    scores: ArrayLike,
    metric: Callable[[np.ndarray, np.ndarray], float],
    groups: ArrayLike | None = None,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric(labels, scores)`.

    Without `groups`, samples are drawn with replacement. With `groups` (one key per sample, e.g. the
    person a clip shows), whole groups are drawn: clips of one person share that person's offset, so
    they are not independent evidence, and resampling them one by one would give a falsely narrow
    interval. Resamples holding one class only are redrawn (ranking metrics need both).
    Raises ValueError when the data have one class, or fewer than 2 groups.
    """
    y, s = _inputs(labels, scores)
    _both_classes(y, "a bootstrap interval")
    keys = np.arange(y.size) if groups is None else np.asarray(groups).ravel()
    if keys.shape != y.shape:
        raise ValueError(f"groups must have one key per sample, got {keys.size} for {y.size}")
    unique, members = np.unique(keys, return_inverse=True)
    if unique.size < 2:
        raise ValueError("a bootstrap over groups needs at least 2 groups")
    rows_of = [np.flatnonzero(members == g) for g in range(unique.size)]
    rng = np.random.default_rng(seed)
    values: list[float] = []
    # Redraws are bounded: with few groups, some may hold one class only, but not every draw can.
    for _ in range(20 * resamples):
        if len(values) == resamples:
            break
        rows = np.concatenate([rows_of[g] for g in rng.integers(0, unique.size, unique.size)])
        if y[rows].min() != y[rows].max():
            values.append(metric(y[rows], s[rows]))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def metrics_by_group(
    table: pd.DataFrame,
    by: str,
    reals: Literal["shared", "grouped"],
    threshold: float = 0.5,
    label_col: str = "label",
    score_col: str = "probability",
) -> pd.DataFrame:
    """`summary_metrics` per value of column `by`, one row per group.

    reals="shared": for columns only fakes have (manipulation method), groups are formed from the fake
    rows and each is scored against *all* real rows, as FaceForensics++ reports per-method AUC.
    reals="grouped": for columns both classes have (compression, quality bucket), each group is scored
    on its own rows.
    """
    labels = table[label_col].to_numpy()
    rows = []
    if reals == "shared":
        real_rows = table[labels == 0]
        for value, fakes in table[labels == 1].groupby(by, sort=True):
            group = pd.concat([real_rows, fakes])
            rows.append({by: value, **summary_metrics(group[label_col], group[score_col], threshold)})
    elif reals == "grouped":
        for value, group in table.groupby(by, sort=True):
            rows.append({by: value, **summary_metrics(group[label_col], group[score_col], threshold)})
    else:
        raise ValueError(f"reals must be 'shared' or 'grouped', got {reals!r}")
    return pd.DataFrame(rows)
