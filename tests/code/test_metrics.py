"""Metrics against hand-computed cases (and scikit-learn where it defines the same quantity)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, roc_auc_score

from dfguard.metrics import (
    average_precision,
    bootstrap_interval,
    brier_score,
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
from dfguard.models.aggregation import aggregate_video_scores
from dfguard.plots import plot_precision_recall, plot_reliability, plot_roc


def test_auc_with_ties_counts_half() -> None:
    # Fakes score 0.4, 0.8, 0.4; reals 0.1, 0.4, 0.6. Pairs won: 0.4 -> 1 + 1/2, 0.8 -> 3, 0.4 -> 1 + 1/2.
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.4, 0.8, 0.6, 0.4]
    assert roc_auc(labels, scores) == pytest.approx(6 / 9)
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))


def test_auc_and_ap_match_scikit_learn_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + 0.3 * labels, 2)  # rounding makes many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores))


def test_average_precision_hand_case() -> None:
    # Ranked fake, real, fake: precision 1 at recall 1/2, then 2/3 at recall 1.
    assert average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_roc_curve_keeps_every_distinct_score_and_starts_at_infinity() -> None:
    # scikit-learn's default would drop the collinear points at 0.9 and 0.3; the EER interpolates
    # between neighbouring points, so every one is kept.
    fpr, tpr, thresholds = roc_curve([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.2])
    np.testing.assert_array_equal(fpr, [0, 0, 0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.3, 0.2])
    fpr, tpr, thresholds = roc_curve([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9])  # the tie is one point
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])


def test_precision_recall_curve_runs_from_the_highest_threshold_without_an_end_point() -> None:
    # Ranked fake, real, fake: one point per score, highest first (scikit-learn's own order is the
    # reverse, and it appends a (precision 1, recall 0) point that has no threshold).
    precision, recall, thresholds = precision_recall_curve([1, 0, 1], [0.9, 0.8, 0.7])
    np.testing.assert_allclose(precision, [1, 1 / 2, 2 / 3])
    np.testing.assert_array_equal(recall, [0.5, 0.5, 1])
    np.testing.assert_array_equal(thresholds, [0.9, 0.8, 0.7])


def test_eer_separable() -> None:
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (0.0, 0.8)


def test_eer_known_overlap_at_a_curve_point() -> None:
    # At threshold 0.6: one of four reals (0.6) flagged, one of four fakes (0.4) missed.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    assert equal_error_rate(labels, scores) == pytest.approx((0.25, 0.6))


def test_eer_interpolates_across_a_tie() -> None:
    # A real and a fake tie at 0.5: the curve jumps from (FPR 0, FNR 1/2) to (1/2, 0); the rates are
    # equal half-way along that segment.
    eer, threshold = equal_error_rate([0, 1, 0, 1], [0.1, 0.5, 0.5, 0.9])
    assert eer == pytest.approx(0.25)
    assert threshold == 0.5


def test_threshold_metrics_and_confusion_matrix() -> None:
    labels = [1, 1, 1, 0, 0]
    scores = [0.9, 0.6, 0.2, 0.7, 0.1]
    np.testing.assert_array_equal(confusion_matrix(labels, scores, 0.5), [[1, 1], [1, 2]])
    result = threshold_metrics(labels, scores, 0.5)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert threshold_metrics(labels, scores, 0.6)["tp"] == 2  # score == threshold counts as fake


def test_log_loss_and_brier() -> None:
    assert log_loss([1, 0], [0.9, 0.2]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)
    assert brier_score([1, 0], [0.9, 0.2]) == pytest.approx((0.01 + 0.04) / 2)
    assert math.isfinite(log_loss([1], [0.0]))  # clipped, not infinite
    # at 1e-7, not at scikit-learn's float epsilon
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7))


def test_ece_hand_made_two_bins() -> None:
    # Bin [0, .5): mean p .2, fake fraction 1/2; bin [.5, 1]: mean p .8, fraction 1. Half the samples each.
    ece = expected_calibration_error([0, 1, 1, 1], [0.2, 0.2, 0.8, 0.8], n_bins=2)
    assert ece == pytest.approx(0.5 * 0.3 + 0.5 * 0.2)


def test_the_ece_of_a_calibrated_model_is_not_zero_on_few_samples_and_shrinks_with_more() -> None:
    # One bin (all probabilities 0.7): ECE is |number of fakes / n - 0.7|, with fakes ~ Binomial(n, 0.7).
    # For n = 10 its mean is sum over k of C(10, k) 0.7^k 0.3^(10-k) |k/10 - 0.7|, computed here by hand.
    n = 10
    exact = sum(math.comb(n, k) * 0.7**k * 0.3 ** (n - k) * abs(k / n - 0.7) for k in range(n + 1))
    floor = ece_if_calibrated(np.full(n, 0.7), observed_ece=0.0, resamples=20000)
    assert floor["mean"] == pytest.approx(exact, abs=0.005)
    assert floor["p_value"] == 1.0, "every draw is at least as large as an ECE of 0"

    rng = np.random.default_rng(3)
    means = []
    for size in (48, 348, 3000):
        p = rng.uniform(0.3, 0.8, size)
        means.append(ece_if_calibrated(p, 0.0)["mean"])
    assert means[0] > 0.1 > means[1] > means[2] < 0.03, means

    # Labels drawn from the probabilities are calibrated: their ECE is typical of the draws. An
    # over-confident model (probabilities pushed away from 0.5) is far outside them.
    p = rng.uniform(0.3, 0.8, 348)
    y = rng.random(348) < p
    assert ece_if_calibrated(p, expected_calibration_error(y, p))["p_value"] > 0.05
    sure = np.clip((p - 0.5) * 3 + 0.5, 0, 1)
    result = ece_if_calibrated(sure, expected_calibration_error(y, sure))
    assert result["p_value"] < 0.01 and expected_calibration_error(y, sure) > result["high"]
    assert ece_if_calibrated(p, 0.05, seed=1) == ece_if_calibrated(p, 0.05, seed=1), "seeded"
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ece_if_calibrated(np.array([0.2, 1.5]), 0.1)


def test_reliability_data_uses_15_equal_bins_and_keeps_one() -> None:
    data = reliability_data([0, 1, 1], [0.0, 0.5, 1.0])
    assert len(data.counts) == 15 and data.edges[1] == pytest.approx(1 / 15)
    assert data.counts[0] == 1 and data.counts[7] == 1 and data.counts[14] == 1  # 1.0 in the last bin
    assert np.isnan(data.mean_probability[1])
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0


def test_reliability_data_agrees_with_scikit_learn_inside_bins_and_keeps_its_edges() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    probabilities = rng.random(400) ** 2
    data = reliability_data(labels, probabilities)
    fraction, mean = calibration_curve(labels, probabilities, n_bins=15)
    filled = data.counts > 0
    np.testing.assert_allclose(data.fake_fraction[filled], fraction, rtol=1e-12)
    np.testing.assert_allclose(data.mean_probability[filled], mean, rtol=1e-12)
    # A probability on an edge opens its bin: 0.3 is in [0.3, 0.4). scikit-learn's linspace edge is
    # 0.30000000000000004 and puts it in the bin below, so the binning here is kept.
    assert reliability_data([1], [0.3], n_bins=10).counts[3] == 1


def test_one_class_raises_for_ranking_metrics_and_summary_gives_nan() -> None:
    with pytest.raises(ValueError, match="both"):
        roc_auc([1, 1], [0.2, 0.3])
    summary = summary_metrics([1, 1], [0.2, 0.9])
    assert np.isnan(summary["auc"]) and summary["recall"] == 0.5


def _faces() -> pd.DataFrame:
    rows = [
        # video a: frame 0 has two faces (max 0.9), then 0.3 and 0.6
        ("a", 0, 0.1, 1),
        ("a", 0, 0.9, 1),
        ("a", 1, 0.3, 1),
        ("a", 2, 0.6, 1),
        # video b: 5 of 10 frames confidently fake (> 40 %), the rest undecided
        *[("b", i, 0.95, 1) for i in range(5)],
        *[("b", i, 0.5, 1) for i in range(5, 10)],
        # video c: 19 of 20 frames confidently real (> 90 %), one outlier
        *[("c", i, 0.1, 0) for i in range(19)],
        ("c", 19, 0.9, 0),
        # video d: no usable face in any frame
        ("d", 0, np.nan, 0),
    ]
    return pd.DataFrame(rows, columns=["video_id", "frame", "probability", "label"])


def test_video_aggregation_rules() -> None:
    faces = _faces()
    mean = aggregate_video_scores(faces, "mean", carry=("label",)).set_index("video_id")
    assert mean.loc["a", "probability"] == pytest.approx((0.9 + 0.3 + 0.6) / 3)
    assert mean.loc["a", "n_frames"] == 3 and mean.loc["a", "label"] == 1
    assert np.isnan(mean.loc["d", "probability"]) and mean.loc["d", "n_frames"] == 0
    assert list(mean.index) == ["a", "b", "c", "d"]

    maximum = aggregate_video_scores(faces, "max").set_index("video_id")["probability"]
    assert maximum["a"] == pytest.approx(0.9) and maximum["c"] == pytest.approx(0.9)

    confident = aggregate_video_scores(faces, "confident").set_index("video_id")["probability"]
    assert confident["a"] == pytest.approx(0.6)  # neither rule fires: plain mean
    assert confident["b"] == pytest.approx(0.95)  # mean of the confident fakes
    assert confident["c"] == pytest.approx(0.1)  # mean of the confident reals
    with pytest.raises(ValueError, match="rule"):
        aggregate_video_scores(faces, "median")  # type: ignore[arg-type]


def test_breakdown_by_method_shares_the_reals() -> None:
    table = pd.DataFrame(
        {
            "label": [0, 0, 1, 1, 1, 1],
            "method": ["real", "real", "swap", "swap", "blend", "blend"],
            "compression": ["c23", "c40", "c23", "c40", "c23", "c40"],
            "probability": [0.1, 0.6, 0.9, 0.8, 0.5, 0.4],
        }
    )
    by_method = metrics_by_group(table, "method", reals="shared").set_index("method")
    assert list(by_method.index) == ["blend", "swap"]
    assert by_method.loc["swap", "auc"] == 1.0 and by_method.loc["swap", "n"] == 4
    assert by_method.loc["blend", "auc"] == pytest.approx(0.5)
    by_compression = metrics_by_group(table, "compression", reals="grouped").set_index("compression")
    assert by_compression.loc["c40", "n"] == 3
    assert by_compression.loc["c23", "auc"] == 1.0  # reals 0.1 vs fakes 0.9, 0.5
    assert by_compression.loc["c40", "auc"] == 0.5  # real 0.6 vs fakes 0.8, 0.4


def test_plots_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(rng.random(200) * 0.6 + 0.4 * labels, 0, 1)
    curves = {"model": (labels, probs), "other": (labels, rng.random(200))}
    for plot, name in (
        (plot_roc, "roc.png"),
        (plot_precision_recall, "pr.png"),
        (plot_reliability, "rel.png"),
    ):
        path = plot(curves, tmp_path / "plots" / name)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bootstrap_interval_holds_the_estimate_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(3)

    def interval(n: int) -> tuple[float, float]:
        labels = np.r_[np.zeros(n), np.ones(n)]
        scores = labels + rng.normal(0, 1.2, 2 * n)
        low, high = bootstrap_interval(labels, scores, roc_auc, resamples=400)
        assert low < roc_auc(labels, scores) < high
        return low, high

    small, large = interval(20), interval(500)
    assert large[1] - large[0] < 0.5 * (small[1] - small[0])
    labels, scores = [0, 1, 0, 1, 0, 1], [0.1, 0.9, 0.3, 0.6, 0.5, 0.4]
    assert bootstrap_interval(labels, scores, roc_auc, seed=5) == bootstrap_interval(
        labels, scores, roc_auc, seed=5
    )


def test_bootstrap_over_groups_is_wider_when_groups_share_an_offset() -> None:
    # Twelve people, each with 20 reals and 20 fakes; a person's offset moves all of their clips, so the
    # clips are not independent and resampling them one by one understates the uncertainty (about 2x
    # here; 1.96-2.72x over five seeds).
    rng = np.random.default_rng(0)
    people = np.repeat(np.arange(12), 40)
    labels = np.tile(np.r_[np.zeros(20), np.ones(20)], 12)
    scores = labels + 0.7 * rng.normal(size=12)[people] + rng.normal(0, 0.3, labels.size)
    by_clip = bootstrap_interval(labels, scores, roc_auc, resamples=400)
    by_person = bootstrap_interval(labels, scores, roc_auc, groups=people, resamples=400)
    assert by_person[1] - by_person[0] > 1.5 * (by_clip[1] - by_clip[0])


def test_bootstrap_interval_rejects_what_it_cannot_resample() -> None:
    with pytest.raises(ValueError, match="both real and fake"):
        bootstrap_interval([1, 1, 1], [0.2, 0.5, 0.9], roc_auc)
    with pytest.raises(ValueError, match="at least 2 groups"):
        bootstrap_interval([0, 1], [0.2, 0.9], roc_auc, groups=["ann", "ann"])
    with pytest.raises(ValueError, match="one key per sample"):
        bootstrap_interval([0, 1], [0.2, 0.9], roc_auc, groups=["ann"])
