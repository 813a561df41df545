"""Drift reports: production predictions against the champion's training faces, as one Evidently run
over the face embeddings, the scores, the quality measures and the media kind. Importing this package
does not import Evidently; `drift_report` does, when it runs."""

from dfguard.drift.report import (
    EMBEDDING_METHODS,
    EMBEDDING_PREFIX,
    KIND_COLUMN,
    MIN_ROWS,
    QUALITY_COLUMNS,
    SCORE_COLUMN,
    ColumnDrift,
    DriftPolicy,
    DriftSummary,
    drift_report,
    sample_rows,
)

__all__ = [
    "EMBEDDING_METHODS",
    "EMBEDDING_PREFIX",
    "KIND_COLUMN",
    "MIN_ROWS",
    "QUALITY_COLUMNS",
    "SCORE_COLUMN",
    "ColumnDrift",
    "DriftPolicy",
    "DriftSummary",
    "drift_report",
    "sample_rows",
]
