"""The prediction store, the review queue and MLflow's registry on a real PostgreSQL server (a throwaway
cluster; skipped with the install command where PostgreSQL is not installed): migrations, records and
labels, and what the advisory locks promise to concurrent workers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import test_feedback_store as on_sqlite
from postgres_helpers import PostgresServer, postgres_server, unavailable_reason
from registry_helpers import evaluation, register_tiny, save_tiny_model
from test_feedback_store import NOW, _crop, _files, _record, _tables

from dfguard.config import FeedbackConfig, RegistryConfig
from dfguard.feedback import DB_URL_ENV, SCHEMA_VERSION, open_store, upgrade
from dfguard.feedback.db import FILES_LOCK, make_engine, write_transaction
from dfguard.feedback.schema import labels, metadata, predictions, schema_version
from dfguard.registry import (
    CHAMPION,
    CHAMPION_URI,
    alias_transaction,
    configure,
    current_aliases,
    load,
    model_digest,
    move_alias,
)
from dfguard.review.queue import QueuePolicy, label_item, lease_next
from dfguard.runtime import TELEMETRY_OFF

WAIT_S = 10.0  # for a thread to reach a lock, or to finish once it is released


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install 'psycopg[binary]'")
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as server:
        yield server


@pytest.fixture
def db_url(postgres, request) -> str:
    return postgres.database(request.node.name)


@pytest.fixture
def cfg(db_url, tmp_path, monkeypatch) -> FeedbackConfig:
    # Through the environment, as a deployment sets it: the CLI commands the tests run read it too.
    monkeypatch.setenv(DB_URL_ENV, db_url)
    return FeedbackConfig(root=str(tmp_path / "feedback"), retention_days=30)


@pytest.fixture
def store(cfg):
    with open_store(cfg) as opened:
        yield opened


# The SQLite store's tests that hold for any database, collected again here: `cfg` and `store` are then
# this module's, on PostgreSQL.
test_record_and_get_round_trip_with_crops_and_upload = (
    on_sqlite.test_record_and_get_round_trip_with_crops_and_upload
)
test_nan_quality_is_stored_as_null = on_sqlite.test_nan_quality_is_stored_as_null
test_record_is_idempotent_on_the_prediction_id = on_sqlite.test_record_is_idempotent_on_the_prediction_id
test_status_prediction_without_faces_or_upload = on_sqlite.test_status_prediction_without_faces_or_upload
test_an_upload_refused_unread = on_sqlite.test_an_upload_refused_unread
test_uploads_are_not_kept_when_switched_off = on_sqlite.test_uploads_are_not_kept_when_switched_off
test_predictions_filters = on_sqlite.test_predictions_filters
test_summary_and_cli = on_sqlite.test_summary_and_cli
test_concurrent_writers_on_one_file = on_sqlite.test_concurrent_writers_on_one_file
test_a_newer_schema_is_refused = on_sqlite.test_a_newer_schema_is_refused
test_labels_are_appended_and_checked = on_sqlite.test_labels_are_appended_and_checked
test_purge_keeps_labelled_predictions_and_shared_files = (
    on_sqlite.test_purge_keeps_labelled_predictions_and_shared_files
)
test_a_purged_file_is_rewritten_by_a_later_prediction = (
    on_sqlite.test_a_purged_file_is_rewritten_by_a_later_prediction
)
test_writer_skips_a_record_the_store_refuses = on_sqlite.test_writer_skips_a_record_the_store_refuses


class Worker(threading.Thread):
    """Runs `call` in a thread, keeping its result or what it raised for the test to check."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as err:
            self.error = err

    def finish(self) -> Any:
        """Its result, once it ends; what it raised is raised here."""
        self.join(WAIT_S)
        assert not self.is_alive(), "still blocked"
        if self.error is not None:
            raise self.error
        return self.result


def _wait_until_blocked(engine: sa.Engine, lock: str) -> None:
    """Until a connection to this database waits for a lock of kind `lock` (`advisory`: the store's
    locks; `transactionid`: a row another transaction holds). Each check is a new transaction, since
    PostgreSQL shows a transaction one snapshot of the activity table."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = :lock"
    )
    deadline = time.monotonic() + WAIT_S
    while True:
        with engine.connect() as connection:
            if connection.execute(query, {"lock": lock}).scalar_one():
                return
        assert time.monotonic() < deadline, f"nothing waited for a {lock} lock"
        time.sleep(0.02)


# -- connecting ----------------------------------------------------------------------------------------
def test_a_plain_postgresql_url_connects_and_its_password_stays_hidden(postgres, cfg, monkeypatch) -> None:
    # `postgresql://` (as the docs write it) would load psycopg2, which dfguard does not install.
    plain = sa.make_url(postgres.database("plain")).set(drivername="postgresql")
    monkeypatch.setenv(DB_URL_ENV, plain.render_as_string(hide_password=False))
    with open_store(cfg) as store:
        assert store.engine.dialect.driver == "psycopg"
        store.record(_record())
        assert store.count() == 1
        assert postgres.password not in store.url and "dfguard:***@127.0.0.1" in store.url
        assert store.summary().url == store.url


# -- schema versions -----------------------------------------------------------------------------------
def test_the_migrations_build_the_declared_tables(postgres) -> None:
    migrated = make_engine(postgres.database("migrated"))
    assert upgrade(migrated) == SCHEMA_VERSION
    declared = make_engine(postgres.database("declared"))
    metadata.create_all(declared)
    assert _tables(migrated) == _tables(declared)
    migrated.dispose()
    declared.dispose()


@pytest.mark.parametrize("start", [0, 1])
def test_workers_starting_together_migrate_once(db_url, cfg, start) -> None:
    # Every server worker runs the migrations as it starts; against a new or an old database they must
    # take turns (the migration lock), not race to create the same tables.
    engine = make_engine(db_url)
    if start:
        upgrade(engine, target=start)
        with engine.begin() as connection:  # a row written by a version-1 store
            connection.execute(
                sa.text(
                    "INSERT INTO predictions (prediction_id, created_at, client_key_id, content_sha256, "
                    "media_kind, source, model_name, model_version, model_alias, weights_sha256, verdict, "
                    "probability, calibration, reason, n_faces, n_frames, faces, frames, seconds) VALUES "
                    "(:id, '2026-01-02 03:04:05', '', :sha, 'image', 'service', 'm', '1', '', '', "
                    "'REAL', 0.1, 'photo', '', 0, 0, '[]', '[]', '{}')"
                ),
                {"id": "a" * 32, "sha": "b" * 64},
            )
    barrier = threading.Barrier(6)

    def start_worker() -> int:
        barrier.wait()
        with open_store(cfg) as store:
            return store.schema_version()

    workers = [Worker(start_worker) for _ in range(barrier.parties)]
    for worker in workers:
        worker.start()
    assert [worker.finish() for worker in workers] == [SCHEMA_VERSION] * barrier.parties
    with engine.connect() as connection:
        applied = connection.execute(sa.select(schema_version.c.version).order_by("version")).scalars()
        assert list(applied) == list(range(1, SCHEMA_VERSION + 1))  # each step once
    if start:
        with open_store(cfg) as store:
            assert store.get("a" * 32)["verdict"] == "REAL"
            assert store.add_label("a" * 32, "real", "ann") == 1
    engine.dispose()


def test_a_failed_step_leaves_the_database_as_it_was(db_url, monkeypatch) -> None:
    from dfguard.feedback import schema

    def broken_step(connection) -> None:
        connection.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("the last step failed")

    engine = make_engine(db_url)
    upgrade(engine, target=1)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken_step))
    monkeypatch.setattr(schema, "HEAD", len(schema.MIGRATIONS))
    with pytest.raises(RuntimeError, match="the last step failed"):
        upgrade(engine, target=len(schema.MIGRATIONS))
    # PostgreSQL's DDL is transactional: steps 2 to the broken one, and the trigger function, are gone.
    assert set(sa.inspect(engine).get_table_names()) == {"schema_version", "predictions", "prediction_crops"}
    with engine.connect() as connection:
        assert schema.current_version(connection) == 1
        functions = "SELECT count(*) FROM pg_proc WHERE proname = 'labels_append_only'"
        assert connection.exec_driver_sql(functions).scalar_one() == 0
    engine.dispose()


# -- labels --------------------------------------------------------------------------------------------
def test_labels_cannot_be_truncated(store) -> None:
    record = _record()
    store.record(record)
    store.add_label(record.prediction_id, "fake", "ann")
    # TRUNCATE skips row triggers; the store's is a statement trigger, which it does not skip.
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as connection:
        connection.exec_driver_sql("TRUNCATE labels")
    assert len(store.labels()) == 1


# -- concurrent workers --------------------------------------------------------------------------------
def test_a_record_racing_its_own_retry_is_stored_once(store) -> None:
    record = _record()
    store.record(record)
    with store.engine.connect() as connection:
        row = dict(connection.execute(sa.select(predictions)).mappings().one())
    with store.engine.begin() as connection:
        connection.execute(predictions.delete())
    # Another worker's insert of the same prediction, not yet committed: this write's check finds no
    # row, its insert waits on the key, then fails on it once the other commits.
    with store.engine.connect() as other, other.begin():
        other.execute(predictions.insert().values(row))
        writer = Worker(lambda: store.record(record))
        writer.start()
        _wait_until_blocked(store.engine, "transactionid")
    writer.finish()  # the duplicate key is recognised as the same prediction, not raised
    assert store.count() == 1 and store.get(record.prediction_id)["verdict"] == "FAKE"


def test_a_write_waits_for_a_purge_and_puts_back_the_files_it_deleted(store, cfg) -> None:
    record = _record(crops=[_crop(7)], upload=b"an upload a purge is deleting")
    with write_transaction(store.engine, lock=FILES_LOCK):
        writer = Worker(lambda: store.record(record))
        writer.start()
        _wait_until_blocked(store.engine, "advisory")
        # The write saved its files before asking for the lock; the purge deletes them meanwhile (an
        # expired prediction named the same crop and upload).
        saved = _files(Path(cfg.root))
        assert len(saved) == 2
        for path in saved:
            path.unlink()
        assert writer.is_alive()
    writer.finish()
    stored = store.get(record.prediction_id)
    assert stored["crops"][0]["path"].is_file() and stored["upload_path"].is_file()
    assert sorted(_files(Path(cfg.root))) == saved


def test_writes_share_the_files_lock_and_a_purge_waits_for_them(store) -> None:
    expired = _record(NOW - timedelta(days=40))
    store.record(expired)
    with write_transaction(store.engine, lock=FILES_LOCK, shared=True):
        store.record(_record())  # another write does not wait for this one
        purge = Worker(store.purge)
        purge.start()
        _wait_until_blocked(store.engine, "advisory")
        assert store.get(expired.prediction_id) is not None
    assert purge.finish().predictions == 1
    assert store.get(expired.prediction_id) is None and store.count() == 1


def test_a_label_added_during_a_purge_keeps_its_prediction(store) -> None:
    racing, unlabelled = _record(NOW - timedelta(days=40)), _record(NOW - timedelta(days=40))
    for record in (racing, unlabelled):
        store.record(record)
    with store.engine.connect() as reviewer, reviewer.begin():
        reviewer.execute(
            labels.insert().values(
                prediction_id=racing.prediction_id, label="fake", reviewer="ann", note="", created_at=NOW
            )
        )
        purge = Worker(store.purge)
        purge.start()
        # The purge saw no label (not committed yet) and waits to delete the row the label refers to.
        _wait_until_blocked(store.engine, "transactionid")
    # The label committed first: the purge fails on the foreign key and deletes nothing.
    with pytest.raises(sa.exc.IntegrityError, match="foreign key"):
        purge.finish()
    assert store.count() == 2
    assert store.get(racing.prediction_id)["upload_path"].is_file()
    assert store.purge().predictions == 1  # run again, it keeps the labelled one
    assert store.get(racing.prediction_id) is not None and store.get(unlabelled.prediction_id) is None


def test_concurrent_reviewers_never_share_an_item(store) -> None:
    for age in range(12):
        store.record(_record(NOW - timedelta(minutes=age)))
    policy = QueuePolicy(lease=timedelta(minutes=10), second_review_share=0.0)
    reviewers = [f"reviewer{i}" for i in range(6)]
    barrier = threading.Barrier(len(reviewers))

    def review(name: str) -> list[str]:
        barrier.wait()
        leased = []
        for _ in range(2):
            item = lease_next(store, name, "oldest", policy)
            if item is not None:
                leased.append(item)
                label_item(store, item, name, "fake")
        return leased

    workers = [Worker(lambda name=name: review(name)) for name in reviewers]
    for worker in workers:
        worker.start()
    items = [item for worker in workers for item in worker.finish()]
    assert len(items) == len(set(items)) == 12
    assert store.labels()["prediction_id"].is_unique


# -- MLflow --------------------------------------------------------------------------------------------
def test_mlflow_registry_in_the_store_database(db_url, cfg, tmp_path, monkeypatch) -> None:
    # Run from another folder: MLflow alone would put the artifacts in ./mlruns of the current one.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for key, value in TELEMETRY_OFF.items():
        monkeypatch.setenv(key, value)
    with open_store(cfg) as store:
        store.record(_record())
    registry = RegistryConfig(root=str(tmp_path / "registry"), tracking_uri=db_url)
    client = configure(registry)  # MLflow's migrations, beside the store's
    model = save_tiny_model(tmp_path / "model")
    first = register_tiny(client, model, evaluation(0.7))
    second = register_tiny(client, model, evaluation(0.8))
    move_alias(client, CHAMPION, first)
    with pytest.raises(RuntimeError, match="verification failed"), alias_transaction(client):
        move_alias(client, CHAMPION, second)
        raise RuntimeError("verification failed")
    assert current_aliases(client)[CHAMPION] == first
    assert model_digest(load(client, CHAMPION_URI, tmp_path / "loaded")) == model_digest(model)
    with open_store(cfg) as store:
        assert store.schema_version() == SCHEMA_VERSION and store.count() == 1
    # The artifacts landed under registry.root, not in the folder the process ran from.
    assert not (elsewhere / "mlruns").exists()
    assert any((tmp_path / "registry").rglob("model.safetensors"))
