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
    Band,
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


def test_each_side_of_the_band_meets_the_precision_target_on_validation() -> None:
    logits, labels = _overconfident(n=4000, seed=1)
    cal = fit_calibrator(logits, labels, target_precision=0.9, max_uncertain_fraction=0.5)
    assert cal.target_met and cal.real_below < cal.threshold < cal.fake_from
    verdicts = np.array([cal.verdict(p) for p in cal.apply(logits)])
    assert (labels[verdicts == FAKE] == 1).mean() == pytest.approx(cal.fake_precision)
    assert (labels[verdicts == REAL] == 0).mean() == pytest.approx(cal.real_precision)
    assert cal.fake_precision >= 0.9 and cal.real_precision >= 0.9
    assert (verdicts == UNCERTAIN).mean() == pytest.approx(cal.uncertain_fraction)
    # The narrowest band: one item more decided on either side and that side falls below the target.
    probs = cal.apply(logits)
    nearest_fake_side = probs[(probs >= cal.threshold) & (probs < cal.fake_from)].max()
    assert (labels[probs >= nearest_fake_side] == 1).mean() < 0.9


def test_choose_band_hand_case_fits_the_two_sides_apart() -> None:
    # Threshold 0.5. Above it: fakes at .9, .8, .7, a real at .6 (the FAKE side needs one undecided
    # to reach precision 1). Below it: reals at .1, .2, fakes at .4 and .45 (two undecided).
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.4, 0.45])
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 1])
    band = choose_band(probs, labels, 0.5, target_precision=1.0, max_uncertain_fraction=0.5)
    assert band == Band(real_below=pytest.approx(0.4), fake_from=pytest.approx(0.7), target_met=True)
    # At a precision of 0.6, the FAKE side needs no band (3 of 4 right); the REAL side needs one
    # undecided, the 0.45 (then 2 of 3 called REAL are reals).
    band = choose_band(probs, labels, 0.5, target_precision=0.6, max_uncertain_fraction=0.5)
    assert band == Band(real_below=pytest.approx(0.45), fake_from=0.5, target_met=True)
    # All right on both sides: no band at all, the edges are the threshold.
    assert choose_band(probs[[0, 1, 4, 5]], labels[[0, 1, 4, 5]], 0.5) == Band(0.5, 0.5, True)


def test_a_cap_too_small_for_the_target_narrows_both_sides_and_says_so() -> None:
    probs = np.array([0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.4, 0.45])
    labels = np.array([1, 1, 1, 0, 0, 0, 1, 1])
    # The target needs 3 of 8 undecided; a cap of 2 keeps 1 of the FAKE side's and 1 of the REAL's.
    band = choose_band(probs, labels, 0.5, target_precision=1.0, max_uncertain_fraction=0.25)
    assert not band.target_met
    undecided = (probs >= band.real_below) & (probs < band.fake_from)
    assert undecided.sum() <= 2 and undecided.sum() >= 1
    # No fake on a side at all: nothing is called FAKE, whatever its probability.
    never = choose_band(
        np.array([0.9, 0.2]), np.array([0, 0]), 0.5, target_precision=0.9, max_uncertain_fraction=1.0
    )
    assert never.fake_from > 1.0 and never.real_below == 0.5


def test_an_empty_band_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    logits = np.array([-4.0, -3.0, -2.0, 2.0, 3.0, 4.0])
    labels = np.array([0, 0, 0, 1, 1, 1])
    with caplog.at_level("WARNING"):
        cal = fit_calibrator(logits, labels)
    assert cal.real_below == cal.fake_from == cal.threshold
    assert "UNCERTAIN band is empty" in caplog.text


def test_verdicts_and_json_round_trip(tmp_path: Path) -> None:
    cal = Calibrator(
        temperature=2.0,
        threshold=0.5,
        real_below=0.35,
        fake_from=0.6,
        target_precision=0.9,
        target_met=True,
        n_validation=10,
        ece_before=0.2,
        ece_after=0.05,
        nll_before=0.9,
        nll_after=0.5,
        uncertain_fraction=0.2,
        decided_accuracy=0.96,
    )
    assert cal.verdict(0.55) == UNCERTAIN and cal.verdict(0.4) == UNCERTAIN and cal.verdict(0.35) == UNCERTAIN
    assert cal.verdict(0.6) == FAKE and cal.verdict(0.3499) == REAL
    assert Calibrator.load(cal.save(tmp_path / "calibration.json")) == cal
    assert cal.apply(np.array([2.0]))[0] == pytest.approx(expit(1.0))


def test_a_calibration_saved_with_a_symmetric_margin_still_loads() -> None:
    legacy = {
        "temperature": 1.0,
        "threshold": 0.4,
        "margin": 0.1,
        "target_accuracy": 0.95,
        "target_met": True,
        "n_validation": 48,
        "ece_before": 0.1,
        "ece_after": 0.05,
        "nll_before": 0.6,
        "nll_after": 0.5,
        "uncertain_fraction": 0.2,
        "decided_accuracy": 0.9,
        "bias": 0.0,
    }
    cal = Calibrator.from_dict(legacy)
    assert (cal.real_below, cal.fake_from) == (pytest.approx(0.3), pytest.approx(0.5))
    assert cal.verdict(0.45) == UNCERTAIN and cal.verdict(0.55) == FAKE and cal.verdict(0.25) == REAL
