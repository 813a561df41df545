"""The prediction store: what the detection service predicted, on which model, from which upload and
faces; what reviewers said about it; and how long it is kept. The service writes through a
`StoreWriter` (never waiting for the store), the review dashboard reads and labels, and the feedback
loop reads labelled predictions for fine-tuning and drift reports."""

from dfguard.feedback.record import LABELS, MANIPULATIONS, MEDIA_KINDS, QUALITY_KEYS, ROLES, PredictionRecord
from dfguard.feedback.schema import HEAD as SCHEMA_VERSION
from dfguard.feedback.schema import SchemaError, upgrade
from dfguard.feedback.store import (
    DB_URL_ENV,
    PredictionStore,
    PurgeResult,
    StoreSummary,
    open_store,
    store_url,
)
from dfguard.feedback.writer import StoreWriter

__all__ = [
    "DB_URL_ENV",
    "LABELS",
    "MANIPULATIONS",
    "MEDIA_KINDS",
    "QUALITY_KEYS",
    "ROLES",
    "SCHEMA_VERSION",
    "PredictionRecord",
    "PredictionStore",
    "PurgeResult",
    "SchemaError",
    "StoreSummary",
    "StoreWriter",
    "open_store",
    "store_url",
    "upgrade",
]
