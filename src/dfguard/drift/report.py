"""One Evidently report comparing production predictions with the champion's training faces.

Both sides are plain frames, one row per media item: the model's mean face embedding (`emb_0` …
`emb_{D-1}`), its p(fake) (`probability`), the quality measures of the faces and the media kind. The
report asks two questions in a single Evidently run: do the faces the model now sees look like the ones
it learned from (embedding drift), and did the scores, the input quality or the image/video mix move
(per-column drift)? It saves Evidently's HTML for people and a JSON summary for the loop and the
dashboard, and returns the summary.

Evidently is imported inside `drift_report`: its import takes about 5 s, which a process that only
needs the names here (the CLI, the dashboard) should not pay.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

from dfguard.feedback.record import QUALITY_KEYS

EMBEDDING_PREFIX = "emb_"
QUALITY_COLUMNS = QUALITY_KEYS  # the store's quality columns; a second list here could drift from it
SCORE_COLUMN = "probability"
KIND_COLUMN = "media_kind"
# Below this many rows a side a drift verdict is noise (the classifier's held-out half has 5 rows a side).
MIN_ROWS = 10
# Evidently's embedding drift methods this module accepts; see `DriftPolicy.embedding_method`.
EMBEDDING_METHODS = ("model", "mmd")

_EMBEDDING_NAME = "face"
_EMBEDDING_COLUMN = re.compile(re.escape(EMBEDDING_PREFIX) + r"(\d+)")
# Names become file names: one plain path component, so no separators and no `..`.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Evidently switches from p-value tests to effect-size distances when the reference has over 1000 rows;
# the same cut is applied here to the smaller side (see `_column_methods`).
_LARGE_SAMPLE = 1000
# How far above chance the `model` method's ROC AUC must be before it counts as drift on a small window:
# its 99th percentile when reference and current are the same distribution (see `_model_threshold`).
_CHANCE_QUANTILE = NormalDist().inv_cdf(0.99)
# Evidently's result types, as they appear in `Snapshot.dict()`.
_EMBEDDINGS_DRIFT = "evidently:metric_v2:EmbeddingsDrift"
_DRIFTED_COLUMNS = "evidently:metric_v2:DriftedColumnsCount"
_VALUE_DRIFT = "evidently:metric_v2:ValueDrift"


@dataclass(frozen=True)
class DriftPolicy:
    """How a drift report samples its inputs and decides that production has drifted.

    `max_rows`: both frames are cut to this many rows by a seeded sample. At 2000 rows a side and
    D=1280 one report takes about 45 s on 2 free cores (60 s with one of them busy), 38 s of which is
    the t-SNE map Evidently draws for the HTML (it cannot be switched off; Evidently caps it at 2500 rows
    a side). A full window of, say, 20 000
    predictions would make the drift classifier and the per-column tests about ten times slower and `mmd`
    impossible (its kernel over 40 000 rows is 12.8 GB of doubles), while 2000 rows a side already pin the
    classifier's ROC AUC to ±0.013 (one standard deviation).

    `embedding_method`: `model` (the default) trains a linear classifier to tell reference from current
    embeddings and reports its ROC AUC on a held-out half. It stays sensitive in 512-1280 dimensions and
    at any embedding scale (CLIP's unit-norm vectors as well as EfficientNet's), and costs about 3 s at
    2000 rows a side. Being linear, it cannot see a change in spread with the same mean; `mmd` (an RBF
    kernel two-sample statistic, cost n²) does, but with Evidently's fixed threshold it misses mean shifts
    that `model` finds with an AUC of 0.8. Evidently's `ratio` (share of dimensions whose Wasserstein
    distance moved) flags identical distributions at a few hundred rows, and `distance` (distance between
    mean embeddings against a fixed 0.2) grows with the dimension and flags them at D=1280 whatever the
    data, so neither is offered.

    `share_drifted`: the columns (score, quality, media kind) have drifted when at least this share of
    them did, as in Evidently's dataset drift.
    """

    max_rows: int = 2000
    embedding_method: str = "model"
    share_drifted: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_rows < MIN_ROWS:
            raise ValueError(f"max_rows must be at least {MIN_ROWS}, got {self.max_rows}")
        if self.embedding_method not in EMBEDDING_METHODS:
            raise ValueError(
                f"embedding_method must be one of {', '.join(EMBEDDING_METHODS)}, "
                f"got {self.embedding_method!r}"
            )
        if not 0.0 < self.share_drifted <= 1.0:
            raise ValueError(f"share_drifted must be in (0, 1], got {self.share_drifted}")


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently's verdict on one column: `method` is its stat test, `score` a p-value for `ks` and `z`
    (drift below `threshold`) or a distance for `wasserstein` and `jensenshannon` (drift at or above it)."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    """What a drift report found, and where it saved the report.

    `drifted` is the verdict the loop acts on: the embeddings drifted, or at least the policy's share of
    the columns did. Rows are those compared, after sampling; `sampled` says whether either side was cut.
    `skipped_columns` were empty (all NaN) on one side and left out of the column tests. `seconds` is
    the report's own time, without Evidently's one-time import (~5 s per process).
    """

    drifted: bool
    embedding_drift: bool
    embedding_method: str
    embedding_score: float
    embedding_threshold: float
    score_drift: bool
    score_method: str
    score_statistic: float
    drifted_columns: tuple[str, ...]
    share_drifted_columns: float
    columns: tuple[ColumnDrift, ...]
    skipped_columns: tuple[str, ...]
    reference_rows: int
    current_rows: int
    sampled: bool
    seconds: float
    html_path: Path
    json_path: Path

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON values: paths as strings, tuples as lists, a non-finite number as None
        (strict JSON has no NaN)."""
        return {
            "drifted": self.drifted,
            "embedding_drift": self.embedding_drift,
            "embedding_method": self.embedding_method,
            "embedding_score": _finite(self.embedding_score),
            "embedding_threshold": _finite(self.embedding_threshold),
            "score_drift": self.score_drift,
            "score_method": self.score_method,
            "score_statistic": _finite(self.score_statistic),
            "drifted_columns": list(self.drifted_columns),
            "share_drifted_columns": _finite(self.share_drifted_columns),
            "columns": [
                {
                    "column": c.column,
                    "method": c.method,
                    "score": _finite(c.score),
                    "threshold": _finite(c.threshold),
                    "drifted": c.drifted,
                }
                for c in self.columns
            ],
            "skipped_columns": list(self.skipped_columns),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "sampled": self.sampled,
            "seconds": self.seconds,
            "html_path": str(self.html_path),
            "json_path": str(self.json_path),
        }


def sample_rows(frame: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most `max_rows` rows of `frame`, drawn without replacement with `seed` so that a report can be
    rerun on the same rows; a frame that already fits is returned as it is."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed)


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    out_dir: Path,
    name: str,
    policy: DriftPolicy | None = None,
) -> DriftSummary:
    """Compare `current` (production predictions) with `reference` (the champion's training faces) in
    one Evidently report, save `<out_dir>/<name>.html` and `<out_dir>/<name>.json`, and return the summary.

    The JSON holds the summary's `to_dict()` and, under `evidently`, Evidently's own result (a few KB).
    Raises ValueError for a bad name, missing or malformed columns, too few rows or embeddings of
    different dimensions, before anything is computed or written.
    """
    policy = policy or DriftPolicy()
    if not _NAME.fullmatch(name) or ".." in name:
        raise ValueError(
            f"report name {name!r} must be a plain file name: letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'"
        )
    embedding_columns = _embedding_columns(reference, current)
    for side, frame in (("reference", reference), ("current", current)):
        _check_frame(side, frame, embedding_columns)

    ref = sample_rows(reference, policy.max_rows, policy.seed)
    cur = sample_rows(current, policy.max_rows, policy.seed)
    sampled = len(ref) < len(reference) or len(cur) < len(current)
    # A column with no value on one side has no distribution to compare (Evidently raises on it).
    skipped = tuple(c for c in (*QUALITY_COLUMNS, KIND_COLUMN) if _empty(ref[c]) or _empty(cur[c]))
    numeric = [SCORE_COLUMN, *(c for c in QUALITY_COLUMNS if c not in skipped)]
    categorical = [] if KIND_COLUMN in skipped else [KIND_COLUMN]
    keep = [*embedding_columns, *numeric, *categorical]
    ref = _prepared(ref, keep, numeric)
    cur = _prepared(cur, keep, numeric)

    # evidently.telemetry is only used by Evidently's UI service and collector, never by a report run;
    # DO_NOT_TRACK keeps it off should a later version start reporting from the library.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # Evidently 0.7.23 imports its UI server (litestar) and `numpy.core`, which warn of their own
    # deprecations: nothing a caller of this function can act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import EmbeddingsDrift
        from evidently.metrics.embeddings import MMDDriftMethod, ModelDriftMethod
        from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    # Evidently's bootstrap option would calibrate the threshold to the sample too, but its 0.7 result
    # keeps only the score and drops the verdict; with a fixed threshold the verdict is `score > threshold`
    # (Evidently's own rule for both methods), so the summary and the HTML agree.
    if policy.embedding_method == "model":
        threshold = _model_threshold(len(ref), len(cur))
        method: Any = ModelDriftMethod(threshold=threshold)
    else:
        method = MMDDriftMethod()
        threshold = method.threshold
    num_method, cat_method = _column_methods(len(ref), len(cur))
    definition = DataDefinition(
        numerical_columns=numeric,
        categorical_columns=categorical,
        embeddings={_EMBEDDING_NAME: embedding_columns},
    )
    report = Report(
        [
            EmbeddingsDrift(embeddings_name=_EMBEDDING_NAME, drift_method=method),
            DataDriftPreset(
                columns=[*numeric, *categorical],
                drift_share=policy.share_drifted,
                num_method=num_method,
                cat_method=cat_method,
            ),
        ],
        # The per-column verdicts exist only as the tests Evidently attaches to each column's drift.
        include_tests=True,
    )
    # A constant column (a quality measure that never varies) makes Evidently's correlation table
    # divide by zero; its drift test handles it, so the floating-point warning is only noise here.
    with np.errstate(divide="ignore", invalid="ignore"):
        snapshot = report.run(
            Dataset.from_pandas(cur, data_definition=definition),
            Dataset.from_pandas(ref, data_definition=definition),
        )
    result = _json_safe(json.loads(snapshot.json()))
    embedding_score, share, columns = _read_result(result, [*numeric, *categorical])

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path = out_dir / f"{name}.html", out_dir / f"{name}.json"
    _write_atomic(html_path, snapshot.get_html_str(as_iframe=False))
    embedding_drift = embedding_score > threshold
    score = next(c for c in columns if c.column == SCORE_COLUMN)
    summary = DriftSummary(
        drifted=embedding_drift or share >= policy.share_drifted,
        embedding_drift=embedding_drift,
        embedding_method=policy.embedding_method,
        embedding_score=embedding_score,
        embedding_threshold=threshold,
        score_drift=score.drifted,
        score_method=score.method,
        score_statistic=score.score,
        drifted_columns=tuple(c.column for c in columns if c.drifted),
        share_drifted_columns=share,
        columns=columns,
        skipped_columns=skipped,
        reference_rows=len(ref),
        current_rows=len(cur),
        sampled=sampled,
        seconds=round(time.perf_counter() - started, 3),
        html_path=html_path,
        json_path=json_path,
    )
    _write_atomic(json_path, json.dumps({**summary.to_dict(), "evidently": result}, allow_nan=False))
    return summary


def _embedding_columns(reference: pd.DataFrame, current: pd.DataFrame) -> list[str]:
    """The embedding columns both sides share, in dimension order; both must hold `emb_0` … `emb_{D-1}`
    with the same D (embeddings of two backbones cannot be compared)."""
    dims = []
    for side, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pd.DataFrame):
            raise ValueError(f"{side} must be a pandas DataFrame, got {type(frame).__name__}")
        found = sorted(int(m.group(1)) for c in frame.columns if (m := _EMBEDDING_COLUMN.fullmatch(str(c))))
        if not found:
            raise ValueError(f"{side} has no embedding columns ({EMBEDDING_PREFIX}0 …)")
        if found != list(range(len(found))):
            missing = sorted(set(range(found[-1] + 1)) - set(found))
            raise ValueError(
                f"{side} embedding columns must be {EMBEDDING_PREFIX}0 … {EMBEDDING_PREFIX}{found[-1]}; "
                f"missing {', '.join(f'{EMBEDDING_PREFIX}{i}' for i in missing[:5])}"
            )
        dims.append(len(found))
    if dims[0] != dims[1]:
        raise ValueError(
            f"embedding dimensions differ: reference has {dims[0]}, current {dims[1]} "
            "(were they made by different backbones?)"
        )
    return [f"{EMBEDDING_PREFIX}{i}" for i in range(dims[0])]


def _check_frame(side: str, frame: pd.DataFrame, embedding_columns: Sequence[str]) -> None:
    """Refuse what would make Evidently fail half-way or compare nonsense: missing columns, too few
    rows, embeddings or scores that are not finite numbers."""
    missing = [c for c in (SCORE_COLUMN, *QUALITY_COLUMNS, KIND_COLUMN) if c not in frame.columns]
    if missing:
        raise ValueError(f"{side} lacks the columns {', '.join(missing)}")
    if len(frame) < MIN_ROWS:
        raise ValueError(f"{side} has {len(frame)} rows; a drift report needs at least {MIN_ROWS} a side")
    embeddings = frame[list(embedding_columns)]
    if not all(pd.api.types.is_numeric_dtype(t) for t in embeddings.dtypes):
        raise ValueError(f"{side} embedding columns must be numbers")
    bad = int((~np.isfinite(embeddings.to_numpy(dtype=float))).any(axis=1).sum())
    if bad:
        raise ValueError(
            f"{side} has {bad} rows with a missing or infinite embedding value; "
            "leave items without a face out of the report"
        )
    scores = pd.to_numeric(frame[SCORE_COLUMN], errors="coerce").to_numpy(dtype=float)
    if not (np.isfinite(scores) & (scores >= 0.0) & (scores <= 1.0)).all():
        raise ValueError(f"{side} {SCORE_COLUMN} must be a number in [0, 1] in every row")


def _empty(column: pd.Series) -> bool:
    """Whether a column has no value to compare (Evidently drops NaN and infinities)."""
    if pd.api.types.is_numeric_dtype(column):
        return not np.isfinite(column.to_numpy(dtype=float)).any()
    return bool(column.isna().all())


def _prepared(frame: pd.DataFrame, columns: Sequence[str], numeric: Sequence[str]) -> pd.DataFrame:
    """Only the compared columns (an extra column would be typed and tested by Evidently), quality as
    floats (a column of None arrives as objects)."""
    out = frame.loc[:, list(columns)].reset_index(drop=True)
    return out.astype({c: float for c in numeric})


def _model_threshold(reference_rows: int, current_rows: int) -> float:
    """The ROC AUC above which the `model` method calls drift: Evidently's 0.55, or on a small window
    the AUC that chance alone stays under 99 times in 100, whichever is higher.

    Evidently scores the classifier on a random half of the rows. When both sides come from the same
    distribution that AUC is a Mann-Whitney statistic with mean 0.5 and variance (n₁+n₂+1)/(12·n₁·n₂);
    at 300 and 200 rows it exceeds 0.55 one time in twelve, at 30 a side more than one time in three,
    while from about 700 rows a side on 0.55 is above that 99th percentile.
    """
    n1, n2 = reference_rows / 2, current_rows / 2
    chance = 0.5 + _CHANCE_QUANTILE * math.sqrt((n1 + n2 + 1) / (12 * n1 * n2))
    return max(0.55, min(chance, 1.0))


def _column_methods(reference_rows: int, current_rows: int) -> tuple[str, str]:
    """The stat tests for the numeric and the categorical columns.

    Evidently's default picks them by the reference's size alone: p-value tests (KS, or chi-square and
    Z for columns of few values) up to 1000 rows, distances with a fixed 0.1 threshold (Wasserstein in
    units of the reference's spread, Jensen-Shannon) above. A 2000-row reference against a window of 40
    then flags most columns of identical distributions, since the distance between small samples is
    noise of that size; and the choice flips per column with the count of its NaNs. Deciding on the
    smaller side, once for every column, keeps the distances (effect sizes, which a training set and a
    large production window would fail on p-values alone) to where both samples are large.
    """
    if min(reference_rows, current_rows) > _LARGE_SAMPLE:
        return "wasserstein", "jensenshannon"
    return "ks", "z"  # Z: a two-proportion test, for the image/video mix


def _read_result(
    result: dict[str, Any], columns: Sequence[str]
) -> tuple[float, float, tuple[ColumnDrift, ...]]:
    """The embedding score, the share of drifted columns and each column's verdict, from Evidently's
    `Snapshot.dict()` (the one public form of its results)."""
    embedding_score = share = None
    found: dict[str, dict[str, Any]] = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"] == _EMBEDDINGS_DRIFT:
            embedding_score = float(metric["value"])
        elif config["type"] == _DRIFTED_COLUMNS:
            share = float(metric["value"]["share"])
        elif config["type"] == _VALUE_DRIFT:
            found[config["column"]] = {
                "method": config["method"],
                "score": metric["value"],
                "threshold": config["threshold"],
            }
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params["type"] == _VALUE_DRIFT:
            found[params["column"]]["drifted"] = test["status"] == "FAIL"
    if embedding_score is None or share is None or any("drifted" not in found.get(c, {}) for c in columns):
        raise RuntimeError("Evidently's result lacks a metric this report asked for; has its format changed?")
    verdicts = tuple(
        ColumnDrift(
            column=c,
            method=found[c]["method"],
            score=math.nan if found[c]["score"] is None else float(found[c]["score"]),
            threshold=float(found[c]["threshold"]),
            drifted=found[c]["drifted"],
        )
        for c in columns
    )
    return embedding_score, share, verdicts


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float replaced by None: Evidently writes NaN (a degenerate test's
    p-value), which strict JSON readers such as browsers refuse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so that a reader (the dashboard) never sees half a
    report."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
