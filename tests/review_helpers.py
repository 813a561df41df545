"""Prediction stores for the review tests, filled with copies of real predictions."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np

from dfguard.feedback import PredictionRecord, PredictionStore


def seed(
    store: PredictionStore,
    records: list[PredictionRecord],
    n: int,
    seed: int = 0,
    start: datetime | None = None,
) -> list[PredictionRecord]:
    """Store `n` predictions: copies of the judged `records` (a real prediction's fields, faces, crops
    and upload) with fresh ids, one minute apart from `start`, and probabilities spread over [0, 1]."""
    judged = [record for record in records if record.probability is not None]
    rng = np.random.default_rng(seed)
    start = start or datetime.now(UTC) - timedelta(days=2)
    made = []
    for i in range(n):
        base = judged[i % len(judged)]
        probability = float(rng.uniform(0, 1))
        threshold = base.threshold if base.threshold is not None else 0.5
        verdict = (
            "UNCERTAIN"
            if abs(probability - threshold) < 0.05
            else "FAKE"
            if probability > threshold
            else "REAL"
        )
        record = dataclasses.replace(
            base,
            prediction_id=uuid.uuid4().hex,
            created_at=start + timedelta(minutes=i),
            probability=probability,
            verdict=verdict,
        )
        store.record(record)
        made.append(record)
    return made
