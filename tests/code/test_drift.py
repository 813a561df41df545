"""Drift reports: real Evidently runs on constructed frames (small, since Evidently's t-SNE map for the
HTML costs seconds per few hundred rows), and the inputs `drift_report` refuses before running one."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dfguard.drift import (
    EMBEDDING_PREFIX,
    MIN_ROWS,
    QUALITY_COLUMNS,
    DriftPolicy,
    DriftSummary,
    drift_report,
    sample_rows,
)

DIM = 32


def make_frame(
    rows: int,
    seed: int,
    *,
    dim: int = DIM,
    shift: float = 0.0,
    spread: float = 1.0,
    probability: tuple[float, float] = (2.0, 2.0),
) -> pd.DataFrame:
    """Rows like the store's: N(shift, spread²) embeddings, Beta-distributed scores, noisy quality
    measures with some NaN (PNG sources have no JPEG quality), a mix of images and videos."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        rng.normal(shift, spread, (rows, dim)), columns=[f"{EMBEDDING_PREFIX}{i}" for i in range(dim)]
    )
    frame["probability"] = rng.beta(*probability, rows)
    frame["face_px"] = rng.normal(160.0, 30.0, rows)
    frame["sharpness"] = rng.lognormal(5.0, 0.5, rows)
    frame["brightness"] = rng.normal(120.0, 20.0, rows)
    frame["jpeg_quality"] = np.where(rng.random(rows) < 0.2, np.nan, rng.integers(60, 96, rows))
    frame["blockiness"] = rng.gamma(2.0, 0.5, rows)
    frame["media_kind"] = rng.choice(["image", "video"], rows, p=[0.7, 0.3])
    return frame


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path.name} holds {constant}, which is not JSON")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


@pytest.fixture(scope="module")
def same(tmp_path_factory: pytest.TempPathFactory) -> DriftSummary:
    """Reference and current drawn from one distribution."""
    out = tmp_path_factory.mktemp("same")
    return drift_report(make_frame(300, 1), make_frame(200, 2), out, "same", DriftPolicy())


def test_import_leaves_evidently_out() -> None:
    # The CLI and the dashboard import the package for its names; Evidently takes ~5 s to import.
    code = "import sys, dfguard.drift; assert 'evidently' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_same_distribution_does_not_drift(same: DriftSummary) -> None:
    assert not same.embedding_drift
    assert 0.3 < same.embedding_score < same.embedding_threshold
    # On 150 and 100 held-out rows chance alone reaches an AUC of 0.55 one time in twelve.
    assert same.embedding_threshold > 0.55
    assert not same.score_drift
    assert not same.drifted
    assert same.share_drifted_columns < 0.5
    assert (same.reference_rows, same.current_rows, same.sampled) == (300, 200, False)
    assert same.skipped_columns == ()
    assert [c.column for c in same.columns] == ["probability", *QUALITY_COLUMNS, "media_kind"]
    # Below 1000 rows a side every column gets a p-value test at 0.05.
    assert {c.column: c.method for c in same.columns} == {
        **{c: "ks" for c in ("probability", *QUALITY_COLUMNS)},
        "media_kind": "z",
    }
    assert all(c.threshold == 0.05 and 0.0 <= c.score <= 1.0 for c in same.columns)
    assert same.drifted_columns == tuple(c.column for c in same.columns if c.drifted)
    assert same.seconds > 0


def test_files_match_the_summary(same: DriftSummary) -> None:
    assert same.html_path.name == "same.html"
    assert same.json_path == same.html_path.with_suffix(".json")
    html = same.html_path.read_text(encoding="utf-8")
    assert "<html" in html[:500].lower()
    assert "Drift in embeddings" in html
    saved = strict_json(same.json_path)
    evidently = saved.pop("evidently")
    assert saved == same.to_dict()
    assert json.loads(json.dumps(same.to_dict(), allow_nan=False)) == saved
    # Evidently's own result rides along: the embedding metric and one drift per column.
    kinds = [m["config"]["type"].rsplit(":", 1)[-1] for m in evidently["metrics"]]
    assert kinds.count("EmbeddingsDrift") == 1
    assert kinds.count("ValueDrift") == len(same.columns)
    assert not list(same.html_path.parent.glob(".*partial"))


def test_shifted_embeddings_drift(tmp_path: Path) -> None:
    summary = drift_report(make_frame(300, 1), make_frame(200, 3, shift=1.0), tmp_path, "shifted")
    assert summary.embedding_drift
    assert summary.embedding_score > 0.9
    assert summary.drifted
    assert not summary.score_drift  # the scores did not move, only the faces


def test_shifted_scores_drift(tmp_path: Path) -> None:
    # The model turned suspicious: p(fake) ~ Beta(5, 2) instead of Beta(2, 2), same faces.
    current = make_frame(200, 4, probability=(5.0, 2.0))
    summary = drift_report(make_frame(300, 1), current, tmp_path, "scores")
    assert summary.score_drift
    assert summary.score_method == "ks"
    assert summary.score_statistic < 0.05
    assert "probability" in summary.drifted_columns
    assert not summary.embedding_drift
    # One of seven columns: not enough for the columns to call drift on their own.
    assert summary.share_drifted_columns == pytest.approx(1 / 7)
    assert not summary.drifted


def test_mmd_sees_a_change_of_spread(tmp_path: Path) -> None:
    # A wider spread with the same mean: invisible to a linear classifier, seen by the kernel test.
    reference, current = make_frame(200, 5, dim=16), make_frame(150, 6, dim=16, spread=1.5)
    summary = drift_report(reference, current, tmp_path, "spread", DriftPolicy(embedding_method="mmd"))
    assert summary.embedding_method == "mmd"
    assert summary.embedding_threshold == pytest.approx(0.015)
    assert summary.embedding_drift
    assert summary.drifted


def test_sampling_caps_rows_and_empty_columns_are_skipped(tmp_path: Path) -> None:
    reference, current = make_frame(300, 7), make_frame(200, 8)
    current["jpeg_quality"] = np.nan  # a window of PNG uploads only
    current["face_px"] = None  # arrives as objects
    summary = drift_report(reference, current, tmp_path, "capped", DriftPolicy(max_rows=60, seed=3))
    assert (summary.reference_rows, summary.current_rows, summary.sampled) == (60, 60, True)
    assert summary.skipped_columns == ("face_px", "jpeg_quality")
    assert [c.column for c in summary.columns] == [
        "probability",
        "sharpness",
        "brightness",
        "blockiness",
        "media_kind",
    ]
    saved = strict_json(summary.json_path)
    assert saved["skipped_columns"] == ["face_px", "jpeg_quality"]
    assert saved["sampled"] is True


def test_sample_rows_is_seeded_and_leaves_small_frames_alone() -> None:
    frame = make_frame(100, 9, dim=2)
    first, again = sample_rows(frame, 30, seed=5), sample_rows(frame, 30, seed=5)
    assert len(first) == 30 and first.index.is_unique
    pd.testing.assert_frame_equal(first, again)
    assert not first.index.equals(sample_rows(frame, 30, seed=6).index)
    assert sample_rows(frame, 100, seed=5) is frame
    with pytest.raises(ValueError, match="positive"):
        sample_rows(frame, 0, seed=5)


def _without(column: str) -> pd.DataFrame:
    return make_frame(50, 10).drop(columns=[column])


def _with(column: str, index: int, value: object) -> pd.DataFrame:
    frame = make_frame(50, 10)
    frame.loc[index, column] = value
    return frame


@pytest.mark.parametrize(
    ("current", "name", "message"),
    [
        (_without("sharpness"), "ok", "current lacks the columns sharpness"),
        (_without("media_kind"), "ok", "current lacks the columns media_kind"),
        (make_frame(MIN_ROWS - 1, 11), "ok", f"current has {MIN_ROWS - 1} rows; .* at least {MIN_ROWS}"),
        (make_frame(50, 12, dim=16), "ok", "embedding dimensions differ: reference has 32, current 16"),
        (_without("emb_5"), "ok", "embedding columns must be emb_0 … emb_31; missing emb_5"),
        (make_frame(50, 13).filter(regex="^(?!emb_)"), "ok", "current has no embedding columns"),
        (_with("emb_3", 4, np.nan), "ok", "1 rows with a missing or infinite embedding value"),
        (_with("emb_3", 4, np.inf), "ok", "1 rows with a missing or infinite embedding value"),
        (_with("probability", 2, 1.5), "ok", r"probability must be a number in \[0, 1\]"),
        (_with("probability", 2, np.nan), "ok", r"probability must be a number in \[0, 1\]"),
        (make_frame(50, 14), "../escape", "must be a plain file name"),
        (make_frame(50, 14), "sub/report", "must be a plain file name"),
        (make_frame(50, 14), "sub\\report", "must be a plain file name"),
        (make_frame(50, 14), "a..b", "must be a plain file name"),
        (make_frame(50, 14), ".hidden", "must be a plain file name"),
        (make_frame(50, 14), "", "must be a plain file name"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_written(
    tmp_path: Path, current: pd.DataFrame, name: str, message: str
) -> None:
    out = tmp_path / "reports"
    with pytest.raises(ValueError, match=message):
        drift_report(make_frame(60, 15), current, out, name)
    assert not out.exists()


def test_reference_problems_name_the_reference(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reference lacks the columns blockiness"):
        drift_report(make_frame(60, 15).drop(columns=["blockiness"]), make_frame(50, 16), tmp_path, "r")
    with pytest.raises(ValueError, match="reference must be a pandas DataFrame"):
        drift_report(make_frame(60, 15).to_dict(), make_frame(50, 16), tmp_path, "r")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_rows": MIN_ROWS - 1}, "max_rows must be at least"),
        ({"embedding_method": "distance"}, "embedding_method must be one of model, mmd"),
        ({"share_drifted": 0.0}, r"share_drifted must be in \(0, 1\]"),
        ({"share_drifted": 1.5}, r"share_drifted must be in \(0, 1\]"),
    ],
)
def test_bad_policies_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftPolicy(**kwargs)


def test_to_dict_writes_no_nan(same: DriftSummary) -> None:
    # A degenerate stat test may score NaN; strict JSON has no NaN, so the summary writes null.
    odd = dataclasses.replace(same, score_statistic=math.nan)
    assert odd.to_dict()["score_statistic"] is None
    json.dumps(odd.to_dict(), allow_nan=False)
