"""Calibration: temperature scaling, a decision threshold and an UNCERTAIN band, fitted on validation.

1. Temperature scaling (Guo et al., 2017) with a bias (Platt, 1999): calibrated p = sigmoid(logit / T
   + b), T and b chosen to minimise the validation negative log-likelihood. It cannot change the
   ranking (AUC, EER stay the same), only how confident the probabilities are, and where 0.5 falls:
   a detector trained on balanced classes, or judged on frames that pool differently into videos,
   is off in its centre as much as in its confidence, which a temperature alone cannot mend.
2. Threshold: the EER point of the calibrated validation probabilities, where the rate of reals
   flagged as fake equals the rate of fakes missed: neither error is favoured by default.
3. UNCERTAIN band: probabilities within `margin` of the threshold get no verdict. The margin is the
   smallest one for which the validation accuracy of the remaining (decided) samples reaches
   `target_accuracy`, as long as at most `max_uncertain_fraction` of the samples fall in the band;
   when the target cannot be met within that cap, the band is the cap and `target_met` is False.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit

from dfguard.metrics import equal_error_rate, expected_calibration_error

FAKE, REAL, UNCERTAIN = "FAKE", "REAL", "UNCERTAIN"
TEMPERATURE_BOUNDS = (0.05, 20.0)

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


def choose_band(
    probabilities: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    target_accuracy: float = 0.95,
    max_uncertain_fraction: float = 0.3,
) -> tuple[float, bool]:
    """(margin, target_met): see the module docstring. Samples are decided when |p - t| >= margin."""
    p = np.asarray(probabilities, np.float64).ravel()
    y = np.asarray(labels).ravel()
    distance = np.abs(p - threshold)
    correct = (p >= threshold) == (y == 1)
    order = np.argsort(-distance, kind="mergesort")
    distance, correct = distance[order], correct[order]
    decided = np.arange(1, p.size + 1)  # the k most distant samples are decided...
    accuracy = np.cumsum(correct) / decided
    # ...but samples at equal distance are decided together, so only the last of a tie is a choice.
    end_of_tie = np.r_[distance[:-1] > distance[1:], True]
    allowed = end_of_tie & (decided >= (1 - max_uncertain_fraction) * p.size)
    meets = allowed & (accuracy >= target_accuracy)
    if meets[-1]:
        return 0.0, True  # no band needed
    if meets.any():
        k = int(np.flatnonzero(meets)[-1])  # the most samples decided, i.e. the narrowest band
        return float(distance[k]), True
    k = int(np.flatnonzero(allowed)[0])  # the widest band the cap allows
    return float(distance[k]), False


@dataclass(frozen=True)
class Calibrator:
    temperature: float
    threshold: float  # on the calibrated probability
    margin: float  # UNCERTAIN when |p - threshold| < margin
    target_accuracy: float
    target_met: bool
    # Validation figures, for the model card and the promotion gate.
    n_validation: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    uncertain_fraction: float
    decided_accuracy: float
    bias: float = 0.0  # added after the temperature; models calibrated before it existed have none

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated fake probabilities."""
        return expit(np.asarray(logits, np.float64) / self.temperature + self.bias)

    def verdict(self, probability: float) -> str:
        if abs(probability - self.threshold) < self.margin:
            return UNCERTAIN
        return FAKE if probability >= self.threshold else REAL

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Calibrator:
        return cls(**json.loads(text))

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
    target_accuracy: float = 0.95,
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
    margin, target_met = choose_band(after, y, threshold, target_accuracy, max_uncertain_fraction)
    if margin == 0.0:
        # Every validation item decided at the target accuracy: fine on a large validation set, but on a
        # few dozen items it can be luck, and production then gets no UNCERTAIN verdict at all.
        log.warning(
            "the UNCERTAIN band is empty: all %d validation items are decided, at the target accuracy "
            "%.2f or better; every item will get a verdict",
            y.size,
            target_accuracy,
        )
    decided = np.abs(after - threshold) >= margin
    correct = (after >= threshold) == (y == 1)
    return Calibrator(
        temperature=temperature,
        bias=bias,
        threshold=threshold,
        margin=margin,
        target_accuracy=target_accuracy,
        target_met=target_met,
        n_validation=int(y.size),
        ece_before=expected_calibration_error(y, before),
        ece_after=expected_calibration_error(y, after),
        nll_before=binary_nll(z, y),
        nll_after=binary_nll(z / temperature + bias, y),
        uncertain_fraction=float(1.0 - decided.mean()),
        decided_accuracy=float(correct[decided].mean()) if decided.any() else float("nan"),
    )
