"""The review queue: which prediction a reviewer labels next, and the leases that keep two reviewers off
the same item.

An item needs a label from a reviewer when it was judged (a verdict, not a status such as NO_FACE), the
reviewer has not labelled it, and either nobody has, or exactly one other reviewer has and it is picked
for a second opinion: a fixed share of items (chosen by their random prediction ids, so the choice
is the same on every dashboard host) and every item its first reviewer called `unsure`. The second
reviewer does not see the first one's label.

Leasing happens in one write transaction (SQLite's write lock, a PostgreSQL advisory lock): the
candidate is chosen among items nobody else holds, and the lease written, before another reviewer can
choose. A reviewer holds one item at a time; a lease left to expire (a closed tab) frees the item.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from dfguard.calibration import FAKE, REAL, UNCERTAIN
from dfguard.config import DashboardConfig
from dfguard.feedback import PredictionStore
from dfguard.feedback.db import write_transaction
from dfguard.feedback.schema import labels, leases, predictions

RULES = {
    "uncertain": "most uncertain first (probability nearest the threshold)",
    "disagreement": "appearance and motion evidence disagree most",
    "oldest": "oldest first",
    "audit": "random audit of confident verdicts",
}
JUDGED = (FAKE, REAL, UNCERTAIN)
LEASE_LOCK = 3  # PostgreSQL advisory lock key, beside the store's own (feedback.db)


@dataclass(frozen=True)
class QueuePolicy:
    lease: timedelta
    second_review_share: float

    @classmethod
    def of(cls, cfg: DashboardConfig) -> QueuePolicy:
        if not cfg.lease_minutes > 0:
            raise ValueError(f"dashboard.lease_minutes must be positive, got {cfg.lease_minutes}")
        if not 0.0 <= cfg.second_review_share <= 1.0:
            raise ValueError(
                f"dashboard.second_review_share must lie in [0, 1], got {cfg.second_review_share}"
            )
        return cls(timedelta(minutes=cfg.lease_minutes), cfg.second_review_share)


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"queue rule must be one of {', '.join(RULES)}, got {rule!r}")
    return rule


def picked_for_second_review(prediction_id: str, share: float) -> bool:
    """Whether an item goes to a second reviewer: its id (uuid4 hex, uniformly random) below the share."""
    return prediction_id < _second_review_cut(share)


def _second_review_cut(share: float) -> str:
    # The first 8 hex digits of an id are uniform on [0, 16**8): ids that sort below this string are
    # `share` of all. Compared as strings, so the same test runs in SQL on any database.
    return "g" if share >= 1.0 else f"{int(share * 16**8):08x}"


def _reviewer_counts() -> sa.Subquery:
    return (
        sa.select(
            labels.c.prediction_id,
            sa.func.count(sa.distinct(labels.c.reviewer)).label("reviewers"),
            sa.func.max(sa.case((labels.c.label == "unsure", 1), else_=0)).label("unsure"),
        )
        .group_by(labels.c.prediction_id)
        .subquery()
    )


def _needs_label(reviewer: str, policy: QueuePolicy, counts: sa.Subquery) -> sa.ColumnElement[bool]:
    own = sa.exists().where(
        labels.c.prediction_id == predictions.c.prediction_id, labels.c.reviewer == reviewer
    )
    second_opinion = sa.and_(
        counts.c.reviewers == 1,
        sa.or_(
            predictions.c.prediction_id < _second_review_cut(policy.second_review_share), counts.c.unsure == 1
        ),
    )
    return sa.and_(
        predictions.c.verdict.in_(JUDGED),
        ~own,
        sa.or_(counts.c.reviewers.is_(None), second_opinion),
    )


def _held_by_others(reviewer: str, now: datetime) -> sa.ColumnElement[bool]:
    return sa.exists().where(
        leases.c.prediction_id == predictions.c.prediction_id,
        leases.c.reviewer != reviewer,
        leases.c.expires_at > now,
    )


def _ordered(query: sa.Select[Any], rule: str) -> sa.Select[Any]:
    if rule == "uncertain":
        distance = sa.func.abs(predictions.c.probability - sa.func.coalesce(predictions.c.threshold, 0.5))
        return query.order_by(distance, predictions.c.created_at)
    if rule == "disagreement":
        # Appearance and motion pull apart when the appearance logit and the motion's share of the
        # fused logit have opposite signs: the more negative their product, the stronger the conflict.
        # Photos (no motion evidence) score 0 and come after every real conflict.
        conflict = predictions.c.appearance_logit * (predictions.c.logit - predictions.c.appearance_logit)
        return query.order_by(sa.func.coalesce(conflict, 0.0), predictions.c.created_at)
    if rule == "oldest":
        return query.order_by(predictions.c.created_at, predictions.c.prediction_id)
    # audit: confident verdicts in random order, so confident mistakes are found too
    return query.where(predictions.c.verdict.in_((FAKE, REAL))).order_by(sa.func.random())


def _candidates(
    reviewer: str, rule: str, policy: QueuePolicy, now: datetime, exclude: Iterable[str]
) -> sa.Select[Any]:
    counts = _reviewer_counts()
    query = (
        sa.select(predictions.c.prediction_id)
        .select_from(predictions.outerjoin(counts, counts.c.prediction_id == predictions.c.prediction_id))
        .where(_needs_label(reviewer, policy, counts), ~_held_by_others(reviewer, now))
    )
    skipped = list(exclude)
    if skipped:
        query = query.where(predictions.c.prediction_id.not_in(skipped))
    return _ordered(query, check_rule(rule))


def queue_ids(
    store: PredictionStore,
    reviewer: str,
    rule: str,
    policy: QueuePolicy,
    limit: int = 50,
    exclude: Iterable[str] = (),
    now: datetime | None = None,
) -> list[str]:
    """The first `limit` items of `reviewer`'s queue in `rule`'s order, without leasing any."""
    query = _candidates(reviewer, rule, policy, now or datetime.now(UTC), exclude).limit(limit)
    with store.engine.connect() as connection:
        return list(connection.execute(query).scalars())


def lease_next(
    store: PredictionStore,
    reviewer: str,
    rule: str,
    policy: QueuePolicy,
    exclude: Iterable[str] = (),
    now: datetime | None = None,
) -> str | None:
    """Lease `reviewer` the next item in `rule`'s order and return its id (None: nothing left for them).

    The reviewer's item still leased and unlabelled comes back first (a reloaded page keeps its item),
    with its lease renewed; any other lease of theirs is given up."""
    now = now or datetime.now(UTC)
    excluded = list(exclude)
    with write_transaction(store.engine, lock=LEASE_LOCK) as connection:
        held = connection.execute(
            sa.select(leases.c.prediction_id).where(leases.c.reviewer == reviewer, leases.c.expires_at > now)
        ).scalars()
        still_open = set(
            connection.execute(
                _candidates(reviewer, rule, policy, now, excluded).where(
                    predictions.c.prediction_id.in_(list(held))
                )
            ).scalars()
        )
        chosen = next(iter(sorted(still_open)), None)
        if chosen is None:
            chosen = connection.execute(_candidates(reviewer, rule, policy, now, excluded).limit(1)).scalar()
        connection.execute(leases.delete().where(leases.c.reviewer == reviewer))
        if chosen is None:
            return None
        # Any lease left on it has expired (the candidates exclude items others hold).
        connection.execute(leases.delete().where(leases.c.prediction_id == chosen))
        connection.execute(
            leases.insert().values(prediction_id=chosen, reviewer=reviewer, expires_at=now + policy.lease)
        )
        return chosen


def holds_lease(
    store: PredictionStore, reviewer: str, prediction_id: str, now: datetime | None = None
) -> bool:
    query = sa.select(leases.c.prediction_id).where(
        leases.c.prediction_id == prediction_id,
        leases.c.reviewer == reviewer,
        leases.c.expires_at > (now or datetime.now(UTC)),
    )
    with store.engine.connect() as connection:
        return connection.execute(query).first() is not None


def release(store: PredictionStore, reviewer: str) -> None:
    """Give up the reviewer's lease (signing out, skipping)."""
    with write_transaction(store.engine, lock=LEASE_LOCK) as connection:
        connection.execute(leases.delete().where(leases.c.reviewer == reviewer))


def label_item(
    store: PredictionStore,
    prediction_id: str,
    reviewer: str,
    label: str,
    note: str = "",
    manipulation: str | None = None,
) -> int:
    """Record the reviewer's label (appended; see PredictionStore.add_label) and free the item."""
    label_id = store.add_label(prediction_id, label, reviewer, note=note, manipulation=manipulation)
    with write_transaction(store.engine, lock=LEASE_LOCK) as connection:
        connection.execute(
            leases.delete().where(leases.c.prediction_id == prediction_id, leases.c.reviewer == reviewer)
        )
    return label_id


@dataclass(frozen=True)
class QueueState:
    waiting: int  # judged items nobody has labelled
    second_opinions: int  # labelled once, waiting for a second reviewer
    leased: int  # held by a reviewer now
    oldest: datetime | None  # of the unlabelled items
    ages_hours: pd.Series  # of each unlabelled item, for a histogram


def queue_state(store: PredictionStore, policy: QueuePolicy, now: datetime | None = None) -> QueueState:
    """The queue's size and age, over every reviewer."""
    now = now or datetime.now(UTC)
    counts = _reviewer_counts()
    joined = predictions.outerjoin(counts, counts.c.prediction_id == predictions.c.prediction_id)
    judged = predictions.c.verdict.in_(JUDGED)
    second = sa.and_(
        counts.c.reviewers == 1,
        sa.or_(
            predictions.c.prediction_id < _second_review_cut(policy.second_review_share), counts.c.unsure == 1
        ),
    )
    with store.engine.connect() as connection:
        created = list(
            connection.execute(
                sa.select(predictions.c.created_at)
                .select_from(joined)
                .where(judged, counts.c.reviewers.is_(None))
            ).scalars()
        )
        second_opinions = connection.execute(
            sa.select(sa.func.count()).select_from(joined).where(judged, second)
        ).scalar_one()
        leased = connection.execute(
            sa.select(sa.func.count()).select_from(leases).where(leases.c.expires_at > now)
        ).scalar_one()
    ages = pd.Series([(now - moment).total_seconds() / 3600 for moment in created], dtype="float64")
    return QueueState(len(created), int(second_opinions), int(leased), min(created, default=None), ages)
