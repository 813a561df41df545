"""Calibration: temperature scaling, a decision threshold and an UNCERTAIN band, fitted on validation.

1. Temperature scaling (Guo et al., 2017) with a bias (Platt, 1999): calibrated p = sigmoid(logit / T
   + b), T and b chosen to minimise the validation negative log-likelihood. It cannot change the
   ranking (AUC, EER stay the same), only how confident the probabilities are, and where 0.5 falls:
   a detector trained on balanced classes, or judged on frames that pool differently into videos,
   is off in its centre as much as in its confidence, which a temperature alone cannot mend.
2. Threshold: the EER point of the calibrated validation probabilities, where the rate of reals
   flagged as fake equals the rate of fakes missed: neither error is favoured by default.
3. UNCERTAIN band: from `real_below` to `fake_from` around the threshold, no verdict. Each side is
   the narrowest for which the validation items decided on it are right at least `target_precision`
   of the time (the items called FAKE are fakes, the items called REAL are reals), fitted apart: a
   detector is rarely as sure of its reals as of its fakes, and a symmetric band pays on one side for
   the other's doubt. At most `max_uncertain_fraction` of the items fall in the band; when the
   target needs more, both sides narrow in proportion and `target_met` is False.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit

from dfguard.metrics import equal_error_rate, expected_calibration_error

FAKE, REAL, UNCERTAIN = "FAKE", "REAL", "UNCERTAIN"
TEMPERATURE_BOUNDS = (0.05, 20.0)
NEVER_FAKE = float(np.nextafter(1.0, 2.0))  # a FAKE edge above every probability

log = logging.getLogger(__name__)


def binary_nll(logits: np.ndarray, labels: np.ndarray) -> float:
    # log(1 + e^z) - y z, stable for large |z| (logits of an over-confident model reach +-50).
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in `TEMPERATURE_BOUNDS` minimising the NLL of sigmoid(logits / T); searched over log T,
    where the NLL is smooth and one-dimensional (Brent's bounded method)."""
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    low, high = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: binary_nll(z / np.exp(log_t), y),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))


def fit_temperature_and_bias(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(T, b) minimising the NLL of sigmoid(logits / T + b), T within `TEMPERATURE_BOUNDS`, started
    from the temperature alone (so the fit is never worse than it)."""
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    start = np.log(fit_temperature(z, y))
    result = minimize(
        lambda v: binary_nll(z / np.exp(v[0]) + v[1], y),
        x0=np.array([start, 0.0]),
        method="L-BFGS-B",
        bounds=[tuple(np.log(TEMPERATURE_BOUNDS)), (-20.0, 20.0)],
    )
    return float(np.exp(result.x[0])), float(result.x[1])


@dataclass(frozen=True)
class Band:
    """Where verdicts stop: REAL below `real_below`, FAKE from `fake_from` up, UNCERTAIN between."""

    real_below: float
    fake_from: float
    target_met: bool


def _side_edge(distance: np.ndarray, right: np.ndarray, target_precision: float) -> int:
    """How many items, nearest the threshold first, one side of the band must leave undecided so
    that the items decided on that side (those farther out) are right at least `target_precision`
    of the time: the fewest that do, ties at equal distance kept together. `distance` ascends."""
    n = distance.size
    if n == 0:
        return 0
    # Leaving the k nearest undecided decides the n - k farthest: their precision, for every k.
    right_outside = np.cumsum(right[::-1])[::-1]  # right_outside[k]: right ones among items k..n-1
    precision = right_outside / np.arange(n, 0, -1)
    cut_allowed = np.r_[True, distance[1:] > distance[:-1]]  # a tie is never split
    meets = cut_allowed & (precision >= target_precision)
    return int(np.flatnonzero(meets)[0]) if meets.any() else n


def choose_band(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    target_precision: float = 0.9,
    max_uncertain_fraction: float = 0.3,
) -> Band:
    """The UNCERTAIN band around `threshold`: on each side, the narrowest one outside which the
    validation items called FAKE are fakes (the items called REAL are reals) at least
    `target_precision` of the time; the two sides are fitted apart, since a detector is rarely as
    sure of its reals as of its fakes. When both together would leave more than
    `max_uncertain_fraction` of the items undecided, each side is narrowed in proportion to the cap
    and `target_met` is False."""
    p = np.asarray(probabilities, np.float64).ravel()
    y = np.asarray(labels).ravel()
    sides = []
    for on_side, is_right, direction in ((p >= threshold, y == 1, 1.0), (p < threshold, y == 0, -1.0)):
        distance = direction * (p[on_side] - threshold)
        order = np.argsort(distance, kind="mergesort")
        distance, right = distance[order], is_right[on_side][order]
        sides.append((distance, _side_edge(distance, right, target_precision)))
    needed = sum(k for _, k in sides)
    cap = int(np.floor(max_uncertain_fraction * p.size))
    target_met = needed <= cap
    (fake_distance, fake_k), (real_distance, real_k) = (
        (distance, _capped(distance, k, cap, needed) if not target_met else k) for distance, k in sides
    )
    # FAKE from the first decided item up (from the threshold itself when no band is needed, above
    # every probability when no fake is decided); REAL below the nearest undecided item (below the
    # threshold when no band is needed, below 0 when no real is decided).
    if fake_k == 0:
        fake_from = threshold
    else:
        fake_from = threshold + fake_distance[fake_k] if fake_k < fake_distance.size else NEVER_FAKE
    if real_k == 0:
        real_below = threshold
    else:
        real_below = threshold - real_distance[real_k - 1] if real_k < real_distance.size else 0.0
    return Band(float(real_below), float(fake_from), target_met)


def _capped(distance: np.ndarray, k: int, cap: int, needed: int) -> int:
    """One side's undecided count narrowed in proportion to the cap, a tie at the cut decided."""
    k = int(np.floor(k * cap / needed))
    while 0 < k < distance.size and distance[k] == distance[k - 1]:
        k -= 1
    return k


@dataclass(frozen=True)
class Calibrator:
    temperature: float
    threshold: float  # on the calibrated probability: the validation's equal-error point
    real_below: float  # REAL when p < real_below (<= threshold)
    fake_from: float  # FAKE when p >= fake_from (>= threshold); UNCERTAIN in between
    target_precision: float
    target_met: bool
    # Validation figures, for the model card and the promotion gate.
    n_validation: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    uncertain_fraction: float
    decided_accuracy: float
    fake_precision: float | None = None  # validation: fakes among the items called FAKE
    real_precision: float | None = None  # validation: reals among the items called REAL
    bias: float = 0.0  # added after the temperature; models calibrated before it existed have none

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated fake probabilities."""
        return expit(np.asarray(logits, np.float64) / self.temperature + self.bias)

    def logit_of(self, probability: float) -> float:
        """The raw logit that `apply` maps to `probability` (in (0, 1))."""
        p = float(np.clip(probability, 1e-9, 1 - 1e-9))
        return self.temperature * (float(np.log(p / (1 - p))) - self.bias)

    def verdict(self, probability: float) -> str:
        if probability >= self.fake_from:
            return FAKE
        return REAL if probability < self.real_below else UNCERTAIN

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> Calibrator:
        """A calibrator from its saved fields, including those saved before the band had two sides
        (a symmetric `margin` fitted to a `target_accuracy`)."""
        fields = dict(fields)
        if "margin" in fields:
            margin = fields.pop("margin")
            fields["real_below"] = fields["threshold"] - margin
            fields["fake_from"] = fields["threshold"] + margin
            fields["target_precision"] = fields.pop("target_accuracy")
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        out.write_text(self.to_json())
        return out

    @classmethod
    def load(cls, path: str | Path) -> Calibrator:
        return cls.from_json(Path(path).read_text())


def fit_calibrator(
    logits: np.ndarray,
    labels: np.ndarray,
    target_precision: float = 0.9,
    max_uncertain_fraction: float = 0.3,
) -> Calibrator:
    """Fit temperature, threshold and band on validation logits (both classes needed)."""
    z = np.asarray(logits, np.float64).ravel()
    y = np.asarray(labels).astype(np.int64).ravel()
    temperature, bias = fit_temperature_and_bias(z, y)
    if np.isclose(temperature, TEMPERATURE_BOUNDS, rtol=1e-3).any():
        # The best temperature may lie beyond the range searched: a model whose logits are that far
        # off is usually overfitted, and a retrain is worth more than the rescaling.
        log.warning(
            "temperature %.3g is at the edge of the range searched %s: the model is far %s confident "
            "than it is accurate on validation",
            temperature,
            TEMPERATURE_BOUNDS,
            "more" if temperature > 1 else "less",
        )
    before, after = expit(z), expit(z / temperature + bias)
    _, threshold = equal_error_rate(y, after)
    band = choose_band(after, y, threshold, target_precision, max_uncertain_fraction)
    if band.real_below == band.fake_from:
        # Every validation item decided at the target: fine on a large validation set, but on a few
        # dozen items it can be luck, and production then gets no UNCERTAIN verdict at all.
        log.warning(
            "the UNCERTAIN band is empty: all %d validation items are decided with each side's precision "
            "%.2f or better; every item will get a verdict",
            y.size,
            target_precision,
        )
    called_fake, called_real = after >= band.fake_from, after < band.real_below
    decided = called_fake | called_real
    return Calibrator(
        temperature=temperature,
        bias=bias,
        threshold=threshold,
        real_below=band.real_below,
        fake_from=band.fake_from,
        target_precision=target_precision,
        target_met=band.target_met,
        n_validation=int(y.size),
        ece_before=expected_calibration_error(y, before),
        ece_after=expected_calibration_error(y, after),
        nll_before=binary_nll(z, y),
        nll_after=binary_nll(z / temperature + bias, y),
        uncertain_fraction=float(1.0 - decided.mean()),
        decided_accuracy=float(((called_fake & (y == 1)) | (called_real & (y == 0)))[decided].mean())
        if decided.any()
        else float("nan"),
        fake_precision=float(y[called_fake].mean()) if called_fake.any() else None,
        real_precision=float(1.0 - y[called_real].mean()) if called_real.any() else None,
    )
