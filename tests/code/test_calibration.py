"""Temperature scaling, the decision threshold and the UNCERTAIN band."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from dfguard.calibration.temperature import (
    FAKE,
    REAL,
    UNCERTAIN,
    Calibrator,
    binary_nll,
    choose_band,
    fit_calibrator,
    fit_temperature,
)
from dfguard.metrics import expected_calibration_error


def _overconfident(n: int = 20000, scale: float = 5.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(true logit), so the true logits are perfectly calibrated; the model
    reports them multiplied by `scale`."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0.0, 2.0, n)
    labels = (rng.random(n) < expit(true_logits)).astype(np.int64)
    return true_logits * scale, labels


def test_temperature_recovers_the_overconfidence_factor() -> None:
    logits, labels = _overconfident()
    assert fit_temperature(logits, labels) == pytest.approx(5.0, rel=0.1)


def test_a_temperature_at_the_edge_of_its_range_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    logits, labels = _overconfident(scale=50.0)
    with caplog.at_level("WARNING", logger="dfguard.calibration.temperature"):
        assert fit_calibrator(logits, labels).temperature == pytest.approx(20.0, rel=1e-3)
    assert "far more confident" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="dfguard.calibration.temperature"):
        fit_calibrator(*_overconfident(scale=5.0))
    assert caplog.text == ""


def test_calibrator_lowers_ece_and_nll() -> None:
    logits, labels = _overconfident()
    cal = fit_calibrator(logits, labels)
    assert cal.temperature == pytest.approx(5.0, rel=0.1)
    assert cal.ece_after < 0.02 < 0.1 < cal.ece_before
    assert cal.nll_after < cal.nll_before
    np.testing.assert_allclose(cal.apply(logits), expit(logits / cal.temperature + cal.bias))
    assert abs(cal.bias) < 0.05  # balanced and centred: nothing to shift
    # Scaling never changes the order, so the EER threshold sits near p = 0.5 for balanced data.
    assert abs(cal.threshold - 0.5) < 0.1


def test_the_bias_recentres_logits_that_are_off_centre() -> None:
    logits, labels = _overconfident()
    shifted = logits + 6.0  # a detector that leans towards fake by a constant
    cal = fit_calibrator(shifted, labels)
    temperature_only = expit(shifted / fit_temperature(shifted, labels))
    assert cal.bias == pytest.approx(-6.0 / cal.temperature, rel=0.15)
    assert cal.nll_after < binary_nll(np.log(temperature_only / (1 - temperature_only)), labels)
    assert cal.ece_after < 0.02 < expected_calibration_error(labels, temperature_only)


def test_band_meets_the_accuracy_target_on_validation() -> None:
    logits, labels = _overconfident(n=4000, seed=1)
    # 0.9 sits at the edge of what half the items can reach here (0.8995 to 0.9005 as the fit moves).
    cal = fit_calibrator(logits, labels, target_accuracy=0.88, max_uncertain_fraction=0.5)
    assert cal.target_met and cal.margin > 0
    assert cal.decided_accuracy >= 0.88
    probs = cal.apply(logits)
    verdicts = np.array([cal.verdict(p) for p in probs])
    decided = verdicts != UNCERTAIN
    assert decided.mean() == pytest.approx(1 - cal.uncertain_fraction)
    assert ((verdicts[decided] == FAKE) == (labels[decided] == 1)).mean() >= 0.88


def test_choose_band_hand_case() -> None:
    # Threshold 0.5; the two samples nearest to it (distance .05) are the two mistakes.
    probs = np.array([0.95, 0.9, 0.1, 0.05, 0.55, 0.45, 0.6, 0.4])
    labels = np.array([1, 1, 0, 0, 0, 1, 1, 0])
    assert choose_band(probs, labels, 0.5, target_accuracy=1.0, max_uncertain_fraction=0.5) == (
        pytest.approx(0.1),
        True,
    )
    margin, met = choose_band(probs, labels, 0.5, target_accuracy=1.0, max_uncertain_fraction=0.1)
    assert not met and margin == pytest.approx(0.05)  # the cap allows no band: every sample decided
    assert choose_band(probs[:4], labels[:4], 0.5) == (0.0, True)  # all correct: no band needed


def test_verdicts_and_json_round_trip(tmp_path: Path) -> None:
    cal = Calibrator(
        temperature=2.0,
        threshold=0.5,
        margin=0.1,
        target_accuracy=0.95,
        target_met=True,
        n_validation=10,
        ece_before=0.2,
        ece_after=0.05,
        nll_before=0.9,
        nll_after=0.5,
        uncertain_fraction=0.2,
        decided_accuracy=0.96,
    )
    assert cal.verdict(0.55) == UNCERTAIN and cal.verdict(0.45) == UNCERTAIN
    assert cal.verdict(0.65) == FAKE and cal.verdict(0.35) == REAL
    assert Calibrator.load(cal.save(tmp_path / "calibration.json")) == cal
    assert cal.apply(np.array([2.0]))[0] == pytest.approx(expit(1.0))
