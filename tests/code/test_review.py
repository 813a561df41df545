"""Human review on real SQLite stores holding copies of real predictions: the dashboard's accounts, the
queue's orders, leases under concurrent reviewers, second opinions, append-only labels per reviewer,
and agreement figures."""

from __future__ import annotations

import argparse
import dataclasses
import io
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from review_helpers import seed
from sklearn.metrics import cohen_kappa_score

from dfguard.cli import review as review_cli
from dfguard.config import DashboardConfig, FeedbackConfig
from dfguard.feedback import DB_URL_ENV, open_store
from dfguard.feedback.schema import users
from dfguard.review.queue import (
    QueuePolicy,
    holds_lease,
    label_item,
    lease_next,
    picked_for_second_review,
    queue_ids,
    queue_state,
    release,
)
from dfguard.review.stats import (
    labelled_predictions,
    labels_per_day,
    model_accuracy,
    model_confusion,
    reviewer_agreement,
)
from dfguard.review.users import add_user, authenticate, find_user, list_users

PASSWORD = "correct horse battery"
POLICY = QueuePolicy(lease=timedelta(minutes=10), second_review_share=0.0)


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> FeedbackConfig:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    return FeedbackConfig(root=str(tmp_path / "feedback"))


@pytest.fixture
def store(cfg):
    with open_store(cfg) as opened:
        yield opened


@pytest.fixture
def seeded(store, served_records):
    return seed(store, served_records, 20)


def _probability_gap(store, prediction_id: str) -> float:
    row = store.get(prediction_id)
    return abs(row["probability"] - row["threshold"])


# -- what the service records for review ----------------------------------------------------------------
def test_the_service_path_records_the_threshold_it_judged_by(store, served_records) -> None:
    judged = [record for record in served_records if record.probability is not None]
    assert judged and all(record.threshold is not None for record in judged)
    for record in served_records:
        store.record(record)
        assert store.get(record.prediction_id)["threshold"] == record.threshold
    statuses = [record for record in served_records if record.probability is None]
    assert statuses and all(record.threshold is None for record in statuses)


# -- accounts ----------------------------------------------------------------------------------------
def test_accounts_store_salted_hashes_and_check_passwords(store) -> None:
    add_user(store, "ann", "reviewer", PASSWORD)
    add_user(store, "eve@example.org", "engineer", PASSWORD)
    with store.engine.connect() as connection:
        hashes = dict(connection.execute(sa.select(users.c.name, users.c.password_hash)).all())
    assert PASSWORD not in "".join(hashes.values())
    assert hashes["ann"] != hashes["eve@example.org"]  # same password, different salts
    assert all(value.startswith("$2b$12$") for value in hashes.values())

    assert authenticate(store, "ann", PASSWORD).role == "reviewer"
    assert authenticate(store, "eve@example.org", PASSWORD).is_engineer
    assert authenticate(store, "ann", PASSWORD + "!") is None
    assert authenticate(store, "nobody", PASSWORD) is None
    assert authenticate(store, "ann'; DROP TABLE users; --", PASSWORD) is None
    assert authenticate(store, "ann", "x" * 100) is None
    assert authenticate(store, "ann", "") is None
    assert find_user(store, "eve@example.org").role == "engineer" and find_user(store, "bob") is None
    assert [user.name for user in list_users(store)] == ["ann", "eve@example.org"]

    with pytest.raises(ValueError, match="exists already"):
        add_user(store, "ann", "engineer", PASSWORD)
    with pytest.raises(ValueError, match="at least 8 characters"):
        add_user(store, "bob", "reviewer", "short")
    with pytest.raises(ValueError, match="at most 72 bytes"):
        add_user(store, "bob", "reviewer", "é" * 40)
    with pytest.raises(ValueError, match="role must be one of reviewer, engineer"):
        add_user(store, "bob", "admin", PASSWORD)
    for name in ("", "../etc", "<script>", "a" * 65, "-dash"):
        with pytest.raises(ValueError, match="user name"):
            add_user(store, name, "reviewer", PASSWORD)


def test_users_cli_reads_the_password_from_stdin(tmp_path, cfg, monkeypatch, capsys) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(f"feedback:\n  root: {cfg.root}\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    args = argparse.Namespace(
        params=str(params), set=[], name="ann", role="engineer", password_stdin=True, action="add"
    )
    assert review_cli._users_add(args) == 0
    assert "user 'ann' added as engineer" in capsys.readouterr().out
    assert review_cli._users_list(argparse.Namespace(params=str(params), set=[])) == 0
    assert capsys.readouterr().out == "ann\tengineer\n"
    with open_store(cfg) as store:
        assert authenticate(store, "ann", PASSWORD).is_engineer


# -- the queue's orders ------------------------------------------------------------------------------
def test_uncertain_first_ranks_by_the_distance_to_each_threshold(store, seeded, served_records) -> None:
    for record in served_records:  # a faceless clip's status must never be queued
        store.record(record)
    order = queue_ids(store, "ann", "uncertain", POLICY, limit=100)
    judged = {r.prediction_id for r in (*seeded, *served_records) if r.probability is not None}
    assert set(order) == judged
    gaps = [_probability_gap(store, prediction_id) for prediction_id in order]
    assert gaps == sorted(gaps)


def test_oldest_first_and_the_audit_of_confident_verdicts(store, seeded) -> None:
    oldest = queue_ids(store, "ann", "oldest", POLICY, limit=100)
    assert oldest == [record.prediction_id for record in sorted(seeded, key=lambda r: r.created_at)]
    confident = {record.prediction_id for record in seeded if record.verdict in ("FAKE", "REAL")}
    audits = [queue_ids(store, "ann", "audit", POLICY, limit=100) for _ in range(3)]
    assert all(set(audit) == confident for audit in audits)
    assert len({tuple(audit) for audit in audits}) > 1  # a random sample, not a fixed order


def test_disagreement_puts_appearance_against_motion_first(store, served_records) -> None:
    base = next(record for record in served_records if record.probability is not None)

    def stored(appearance: float | None, fused: float) -> str:
        record = dataclasses.replace(
            base, prediction_id=uuid.uuid4().hex, appearance_logit=appearance, logit=fused, verdict="FAKE"
        )
        store.record(record)
        return record.prediction_id

    agree = stored(2.0, 3.0)  # motion adds to a fake-looking face
    photo = stored(None, 1.0)  # no motion evidence at all
    mild = stored(1.0, 0.5)  # motion pulls a little the other way
    strong = stored(-2.0, 1.5)  # real-looking face, but the motion says fake
    # Conflicts first, the strongest first; then no evidence to compare; agreement last.
    assert queue_ids(store, "ann", "disagreement", POLICY, limit=10) == [strong, mild, photo, agree]
    with pytest.raises(ValueError, match="queue rule must be one of"):
        queue_ids(store, "ann", "newest", POLICY)


# -- leases ------------------------------------------------------------------------------------------
def test_a_leased_item_is_nobody_elses_until_it_expires(store, seeded) -> None:
    now = datetime.now(UTC)
    first = lease_next(store, "ann", "oldest", POLICY, now=now)
    assert first == min(seeded, key=lambda r: r.created_at).prediction_id
    assert lease_next(store, "ann", "oldest", POLICY, now=now) == first  # a reload keeps the item
    second = lease_next(store, "bob", "oldest", POLICY, now=now)
    assert second not in (first, None)
    assert holds_lease(store, "ann", first, now=now) and not holds_lease(store, "bob", first, now=now)
    # Ann closed her tab: once her lease lapses, the oldest item is the next reviewer's.
    later = now + POLICY.lease + timedelta(seconds=1)
    assert lease_next(store, "cat", "oldest", POLICY, now=later) == first
    # Skipping releases and excludes: Bob moves on.
    release(store, "bob")
    assert lease_next(store, "bob", "oldest", POLICY, exclude=[second], now=later) not in (first, second)


def test_concurrent_reviewers_never_share_an_item(store, seeded) -> None:
    reviewers = [f"reviewer{i}" for i in range(8)]
    leased: dict[str, list[str]] = {name: [] for name in reviewers}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(reviewers))

    def work(name: str) -> None:
        try:
            barrier.wait()
            for _ in range(2):
                item = lease_next(store, name, "uncertain", POLICY)
                if item is not None:
                    leased[name].append(item)
                    label_item(store, item, name, "real")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=work, args=(name,)) for name in reviewers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    items = [item for held in leased.values() for item in held]
    assert len(items) == len(set(items)) == 16  # 20 items, 16 leases: each reviewer got its own
    assert store.labels()["prediction_id"].is_unique


def test_labelling_appends_frees_the_item_and_the_latest_of_each_reviewer_counts(store, seeded) -> None:
    item = lease_next(store, "ann", "uncertain", POLICY)
    label_item(store, item, "ann", "fake", note="warped ear", manipulation="face_swap")
    assert not holds_lease(store, "ann", item)
    assert item not in queue_ids(store, "ann", "uncertain", POLICY, limit=100)
    assert item not in queue_ids(store, "bob", "uncertain", POLICY, limit=100)  # no second opinion asked
    label_item(store, item, "ann", "real")  # she changed her mind
    store.add_label(item, "fake", "bob")
    history = store.labels(item)
    assert history[["reviewer", "label"]].values.tolist() == [
        ["ann", "fake"],
        ["ann", "real"],
        ["bob", "fake"],
    ]
    assert history["manipulation"].tolist()[0] == "face_swap"
    latest = store.reviewer_labels().set_index("reviewer")["label"].to_dict()
    assert latest == {"ann": "real", "bob": "fake"}
    with pytest.raises(ValueError, match="manipulation must be one of"):
        store.add_label(item, "fake", "ann", manipulation="deepfake")


def test_second_opinions_go_to_another_reviewer(store, seeded) -> None:
    everyone = QueuePolicy(lease=timedelta(minutes=10), second_review_share=1.0)
    item = lease_next(store, "ann", "oldest", everyone)
    label_item(store, item, "ann", "fake")
    assert item not in queue_ids(store, "ann", "oldest", everyone, limit=100)
    assert queue_ids(store, "bob", "oldest", everyone, limit=1) == [item]  # the oldest, again, for Bob
    label_item(store, item, "bob", "fake")
    assert item not in queue_ids(store, "cat", "oldest", everyone, limit=100)  # two opinions suffice
    # With no share set, only an `unsure` first label asks for a second opinion.
    unsure = lease_next(store, "ann", "oldest", POLICY)
    label_item(store, unsure, "ann", "unsure")
    assert unsure in queue_ids(store, "bob", "oldest", POLICY, limit=100)
    state = queue_state(store, POLICY)
    assert state.second_opinions == 1 and state.waiting == len(seeded) - 2

    ids = [uuid.uuid4().hex for _ in range(4000)]
    share = sum(picked_for_second_review(prediction_id, 0.1) for prediction_id in ids) / len(ids)
    assert 0.08 < share < 0.12
    assert not any(picked_for_second_review(prediction_id, 0.0) for prediction_id in ids)
    assert all(picked_for_second_review(prediction_id, 1.0) for prediction_id in ids)


def test_policy_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="lease_minutes"):
        QueuePolicy.of(DashboardConfig(lease_minutes=0))
    with pytest.raises(ValueError, match="second_review_share"):
        QueuePolicy.of(DashboardConfig(second_review_share=1.5))


# -- agreement ---------------------------------------------------------------------------------------
def test_reviewer_agreement_is_cohens_kappa_of_the_first_two_reviewers(store, seeded) -> None:
    first = ["fake", "fake", "real", "real", "unsure", "fake", "real", "real"]
    second = ["fake", "real", "real", "real", "unsure", "fake", "fake", "real"]
    for record, a, b in zip(seeded, first, second, strict=False):
        store.add_label(record.prediction_id, a, "ann")
        store.add_label(record.prediction_id, b, "bob")
        store.add_label(record.prediction_id, "unsure", "cat")  # a third reviewer is not counted
    agreement = reviewer_agreement(store.reviewer_labels())
    assert agreement.items == len(first) and agreement.agreed == 6
    assert agreement.kappa == pytest.approx(cohen_kappa_score(first, second))
    same = reviewer_agreement(
        pd.DataFrame(
            {
                "id": [1, 2, 3, 4],
                "prediction_id": ["a", "a", "b", "b"],
                "label": ["fake", "fake", "real", "real"],
            }
        )
    )
    assert same.kappa == pytest.approx(1.0)
    assert pd.isna(reviewer_agreement(store.reviewer_labels().iloc[:0]).kappa)


def test_the_model_against_the_labels(store, seeded) -> None:
    fakes = [record for record in seeded if record.verdict == "FAKE"][:3]
    reals = [record for record in seeded if record.verdict == "REAL"][:2]
    for record in fakes:
        store.add_label(record.prediction_id, "fake", "ann", manipulation="lip_sync")
    store.add_label(reals[0].prediction_id, "fake", "ann")  # a fake the model missed
    store.add_label(reals[1].prediction_id, "unsure", "ann")  # says nothing of the model
    labelled = labelled_predictions(store)
    assert model_accuracy(labelled) == pytest.approx(3 / 4)
    confusion = model_confusion(labelled).set_index(["label", "verdict"])["count"].to_dict()
    assert confusion == {("fake", "FAKE"): 3, ("fake", "REAL"): 1}
    by_kind = model_confusion(labelled, "manipulation")
    assert set(by_kind["manipulation"]) == {"lip_sync", "(none)"}
    per_day = labels_per_day(store.labels())
    assert per_day["labels"].sum() == 5 and set(per_day["reviewer"]) == {"ann"}
