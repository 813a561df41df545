"""The prediction store on real SQLite files: records and their files, queries, schema versions,
labels, retention, and the background writer through an outage."""

from __future__ import annotations

import argparse
import ast
import hashlib
import shutil
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from dfguard.cli import feedback as feedback_cli
from dfguard.config import FeedbackConfig
from dfguard.faces.quality import QUALITY_MEASURES
from dfguard.feedback import (
    DB_URL_ENV,
    QUALITY_KEYS,
    SCHEMA_VERSION,
    PredictionRecord,
    SchemaError,
    StoreWriter,
    open_store,
    store_url,
    upgrade,
)
from dfguard.feedback.db import make_engine, masked_url
from dfguard.feedback.schema import metadata, schema_version

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime.now(UTC)


def _crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def _prediction_dict(verdict: str = "FAKE", probability: float | None = 0.91) -> dict:
    """What `Prediction.to_dict(with_features=True)` returns (the field names are checked below)."""
    return {
        "verdict": verdict,
        "probability": probability,
        "logit": 2.3,
        "reason": "",
        "frames": [{"frame_index": 0, "timestamp_s": 0.0, "status": "OK", "probability": probability}],
        "faces": [
            {
                "frame_index": 0,
                "timestamp_s": 0.0,
                "track_id": 0,
                "box": [1.0, 2.0, 30.0, 40.0],
                "probability": 0.9,
            },
            {
                "frame_index": 0,
                "timestamp_s": 0.0,
                "track_id": 1,
                "box": [50.0, 2.0, 80.0, 40.0],
                "probability": 0.2,
            },
        ],
        "temporal_std": 0.0,
        "flip_rate": 0.0,
        "drift": None,
        "appearance_logit": None,
        "threshold": 0.45,
        "features": [0.25, -0.5, 1.0],
        "quality": {
            "face_px": 120.0,
            "sharpness": 88.5,
            "brightness": 130.0,
            "jpeg_quality": None,
            "blockiness": 1.1,
        },
        "seconds": {"decode": 0.01, "faces": 0.2},
        "calibration": "photo",
        "model": {"name": "efficientnet_lite0", "weights_sha256": "ab" * 32, "input_size": 128},
    }


def _record(
    created_at: datetime = NOW,
    verdict: str = "FAKE",
    crops: list[np.ndarray] | None = None,
    upload: bytes | None = None,
    model_version: str = "3",
    **fields,
) -> PredictionRecord:
    upload = upload if upload is not None else uuid.uuid4().bytes
    return PredictionRecord.from_prediction(
        _prediction_dict(verdict),
        [_crop(1), _crop(2)] if crops is None else crops,
        prediction_id=uuid.uuid4().hex,
        created_at=created_at,
        client_key_id="team-a",
        content_sha256=hashlib.sha256(upload).hexdigest(),
        media_kind="image",
        model_version=model_version,
        model_alias="champion",
        upload=upload,
        upload_suffix=".jpg",
        **fields,
    )


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> FeedbackConfig:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    return FeedbackConfig(root=str(tmp_path / "feedback"), retention_days=30)


@pytest.fixture
def store(cfg):
    with open_store(cfg) as opened:
        yield opened


# -- records -----------------------------------------------------------------------------------------
def test_the_fixture_matches_what_the_predictor_returns() -> None:
    # Read from the source: importing the predictor (torch) would cost this file most of its time.
    tree = ast.parse((ROOT / "src/dfguard/inference/predictor.py").read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Prediction")
    fields = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
    assert set(_prediction_dict()) == fields - {"crops"}
    assert ("face_px", *QUALITY_MEASURES) == QUALITY_KEYS


def test_record_and_get_round_trip_with_crops_and_upload(store, cfg) -> None:
    upload = b"\xff\xd8 a jpeg"
    record = _record(upload=upload)
    store.record(record)
    got = store.get(record.prediction_id)
    assert got["verdict"] == "FAKE" and got["probability"] == pytest.approx(0.91)
    assert got["created_at"] == record.created_at and got["created_at"].tzinfo is not None
    assert got["model_name"] == "efficientnet_lite0" and got["weights_sha256"] == "ab" * 32
    assert (got["model_version"], got["model_alias"], got["client_key_id"]) == ("3", "champion", "team-a")
    assert got["quality"] == {
        "face_px": 120.0,
        "sharpness": 88.5,
        "brightness": 130.0,
        "jpeg_quality": None,
        "blockiness": 1.1,
    }
    assert got["features"] == [0.25, -0.5, 1.0]
    assert got["faces"] == _prediction_dict()["faces"] and got["seconds"] == {"decode": 0.01, "faces": 0.2}
    assert (got["n_faces"], got["n_frames"]) == (2, 1)
    assert [(c["position"], c["track_id"], c["probability"]) for c in got["crops"]] == [
        (0, 0, 0.9),
        (1, 1, 0.2),
    ]
    for crop, image in zip(got["crops"], record.crops, strict=True):
        import cv2

        assert crop["path"] == store.crop_path(crop["crop_sha256"])
        assert np.array_equal(cv2.imread(str(crop["path"])), image)  # lossless
        assert hashlib.sha256(crop["path"].read_bytes()).hexdigest() == crop["crop_sha256"]
    assert got["upload_path"] == store.upload_path(record.content_sha256, ".jpg")
    assert got["upload_path"].read_bytes() == upload
    assert store.get(uuid.uuid4().hex) is None

    # A second prediction sharing a crop adds only the new one's file.
    store.record(_record(crops=[_crop(2), _crop(3)]))
    crop_files = _files(Path(cfg.root) / "crops")
    assert len(crop_files) == 3
    assert not [p for p in _files(Path(cfg.root)) if p.name.endswith(".tmp")]


def test_nan_quality_is_stored_as_null(store) -> None:
    record = _record()
    record = PredictionRecord(**{**record.__dict__, "quality": {"face_px": 80.0, "sharpness": float("nan")}})
    store.record(record)
    assert store.get(record.prediction_id)["quality"]["sharpness"] is None
    assert np.isnan(store.predictions()["sharpness"].iloc[0])


def test_record_is_idempotent_on_the_prediction_id(store, cfg) -> None:
    record = _record()
    store.record(record)
    store.record(record)
    # A retry carrying other values for the same id (a caller's bug) still leaves the first row.
    store.record(PredictionRecord(**{**record.__dict__, "verdict": "REAL"}))
    assert store.count() == 1
    assert store.get(record.prediction_id)["verdict"] == "FAKE"
    assert len(store.get(record.prediction_id)["crops"]) == 2
    assert len(_files(Path(cfg.root) / "crops")) == 2


def test_status_prediction_without_faces_or_upload(store) -> None:
    prediction = {"verdict": "UNREADABLE", "probability": None, "logit": None, "reason": "not a video"}
    record = PredictionRecord.from_prediction(
        prediction,
        [],
        prediction_id=uuid.uuid4().hex,
        created_at=NOW,
        content_sha256="0" * 64,
        media_kind="video",
        source="detect",
    )
    store.record(record)
    got = store.get(record.prediction_id)
    assert (got["verdict"], got["reason"], got["source"]) == ("UNREADABLE", "not a video", "detect")
    assert got["crops"] == [] and got["upload_path"] is None and got["features"] is None
    assert set(got["quality"].values()) == {None}


def test_an_upload_refused_unread(store) -> None:
    # The service refuses an oversized upload before reading it all, and content that is no supported
    # media before judging it: recorded without a hash or a kind.
    record = PredictionRecord.from_prediction(
        {"verdict": "TOO_LARGE", "probability": None, "reason": "over 250 MB"},
        [],
        prediction_id=uuid.uuid4().hex,
        created_at=NOW,
        content_sha256="",
        media_kind="",
    )
    store.record(record)
    got = store.get(record.prediction_id)
    assert (got["verdict"], got["content_sha256"], got["media_kind"]) == ("TOO_LARGE", "", "")
    with pytest.raises(ValueError, match="SHA-256"):  # an upload to save needs its hash
        PredictionRecord(**{**record.__dict__, "upload": b"x", "upload_suffix": ".jpg"})


def test_uploads_are_not_kept_when_switched_off(cfg) -> None:
    cfg.keep_uploads = False
    with open_store(cfg) as store:
        record = _record()
        store.record(record)
        assert store.get(record.prediction_id)["upload_path"] is None
    assert not (Path(cfg.root) / "uploads").exists()


@pytest.mark.parametrize("suffix", ["../x", ".mp4;rm", ".MP4", "mp4", ".mp4\n", "", ".toolong", "./"])
def test_upload_suffix_must_be_a_short_extension(store, suffix) -> None:
    with pytest.raises(ValueError, match="upload suffix"):
        PredictionRecord(**{**_record().__dict__, "upload_suffix": suffix})
    with pytest.raises(ValueError, match="upload suffix"):
        store.upload_path("a" * 64, suffix)


def test_paths_refuse_anything_but_a_hash(store) -> None:
    for bad in ("../" * 10 + "etc/passwd", "A" * 64, "a" * 63):
        with pytest.raises(ValueError, match="SHA-256"):
            store.crop_path(bad)
        with pytest.raises(ValueError, match="SHA-256"):
            store.upload_path(bad, ".jpg")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prediction_id", "not-a-uuid", "uuid4"),
        ("created_at", datetime(2026, 1, 1), "timezone-aware"),
        ("media_kind", "audio", "media_kind"),
        ("verdict", "fake", "verdict"),
        ("probability", 1.5, r"\[0, 1\]"),
        ("probability", float("nan"), "finite"),
        ("quality", {"face_size": 3.0}, "unknown quality"),
        ("features", [1.0, float("inf")], "finite"),
        ("faces", [{"probability": float("nan")}], "JSON"),
        ("crops", [np.zeros((4, 4), np.uint8)], "uint8 BGR"),
        ("crops", [np.zeros((4, 4, 3), np.float32)], "uint8 BGR"),
    ],
)
def test_records_are_checked_when_made(field, value, message) -> None:
    with pytest.raises(ValueError, match=message):
        PredictionRecord(**{**_record().__dict__, field: value})


def test_created_at_is_kept_in_utc() -> None:
    local = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert _record(created_at=local).created_at == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- queries -----------------------------------------------------------------------------------------
def test_predictions_filters(store) -> None:
    old = _record(created_at=NOW - timedelta(days=10), verdict="REAL", model_version="2")
    middle = _record(created_at=NOW - timedelta(days=5), verdict="FAKE", model_version="3")
    new = _record(created_at=NOW - timedelta(hours=1), verdict="NO_FACE", model_version="3")
    for record in (new, old, middle):
        store.record(record)

    def ids(frame) -> list[str]:
        return frame["prediction_id"].tolist()

    everything = store.predictions()
    assert ids(everything) == [old.prediction_id, middle.prediction_id, new.prediction_id]  # oldest first
    assert str(everything["created_at"].dtype) == "datetime64[ns, UTC]"
    assert everything["features"].iloc[0] == [0.25, -0.5, 1.0]
    assert set(QUALITY_KEYS) <= set(everything.columns) and "faces" not in everything.columns
    assert ids(store.predictions(since=NOW - timedelta(days=6))) == [middle.prediction_id, new.prediction_id]
    assert ids(store.predictions(until=middle.created_at)) == [old.prediction_id]  # exclusive
    assert ids(store.predictions(since=middle.created_at, until=new.created_at)) == [middle.prediction_id]
    assert ids(store.predictions(verdicts=["REAL", "NO_FACE"])) == [old.prediction_id, new.prediction_id]
    assert ids(store.predictions(model_version="3")) == [middle.prediction_id, new.prediction_id]
    assert ids(store.predictions(limit=2)) == [middle.prediction_id, new.prediction_id]  # the newest
    store.add_label(middle.prediction_id, "fake", "ann")
    assert ids(store.predictions(labelled=True)) == [middle.prediction_id]
    assert ids(store.predictions(labelled=False)) == [old.prediction_id, new.prediction_id]
    assert store.predictions(labelled=True)["label"].tolist() == ["fake"]
    empty = store.predictions(verdicts=[])
    assert empty.empty and list(empty.columns) == list(everything.columns)
    with pytest.raises(ValueError, match="timezone-aware"):
        store.predictions(since=datetime(2026, 1, 1))
    assert store.count() == 3


def test_summary_and_cli(store, cfg, tmp_path, capsys) -> None:
    store.record(_record(verdict="FAKE", model_version="3"))
    store.record(_record(verdict="FAKE", model_version=""))
    labelled = _record(verdict="REAL", model_version="3")
    store.record(labelled)
    store.add_label(labelled.prediction_id, "real", "ann")
    store.add_label(labelled.prediction_id, "unsure", "bob")
    summary = store.summary()
    assert (summary.predictions, summary.labelled, summary.labels) == (3, 1, 2)
    assert summary.by_verdict == {"FAKE": 2, "REAL": 1}
    assert summary.by_model_version == {"": 1, "3": 2}
    assert summary.schema_version == SCHEMA_VERSION

    parser = argparse.ArgumentParser()
    parser.add_argument("--params", default=str(tmp_path / "no-params.yaml"))
    parser.add_argument("--set", action="append", default=[])
    feedback_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--set", f"feedback.root={cfg.root}", "feedback", "stats"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "predictions: 3" in out and "labelled: 1 predictions (2 labels)" in out
    assert "(local folder)" in out and "FAKE" in out
    args = parser.parse_args(["--set", f"feedback.root={cfg.root}", "feedback", "purge", "--days", "0"])
    assert args.func(args) == 0
    assert "purged 2 unlabelled predictions" in capsys.readouterr().out


def test_passwords_are_masked() -> None:
    masked = masked_url("postgresql+psycopg://dfguard:s3cret@db.example:5432/feedback")
    assert "s3cret" not in masked and "dfguard:***@db.example" in masked


# -- where the store is ------------------------------------------------------------------------------
def test_store_url_prefers_the_environment(cfg, tmp_path, monkeypatch) -> None:
    assert store_url(cfg) == f"sqlite:///{Path(cfg.root).resolve()}/predictions.db"
    cfg.db_url = f"sqlite:///{tmp_path}/configured.db"
    assert store_url(cfg) == cfg.db_url
    override = tmp_path / "elsewhere" / "env.db"
    monkeypatch.setenv(DB_URL_ENV, f"sqlite:///{override}")
    assert store_url(cfg) == f"sqlite:///{override}"
    with open_store(cfg) as store:
        store.record(_record())
    assert override.is_file() and not (tmp_path / "configured.db").exists()
    assert (Path(cfg.root) / "crops").is_dir()  # files stay under root whatever the database


def test_unsupported_databases_are_refused(cfg, monkeypatch) -> None:
    monkeypatch.setenv(DB_URL_ENV, "mysql://u:p@localhost/x")
    with pytest.raises(ValueError, match="not supported"):
        open_store(cfg)
    monkeypatch.setenv(DB_URL_ENV, "sqlite://")
    with pytest.raises(ValueError, match="in-memory"):
        open_store(cfg)


def test_sqlite_runs_in_wal_mode_with_foreign_keys(store) -> None:
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_concurrent_writers_on_one_file(cfg) -> None:
    # Each thread has its own engine, as each server worker process does.
    stores = [open_store(cfg) for _ in range(4)]
    records = [[_record() for _ in range(10)] for _ in stores]
    errors: list[BaseException] = []

    def write(store, batch) -> None:
        try:
            for record in batch:
                store.record(record)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=write, args=pair) for pair in zip(stores, records, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert stores[0].count() == 40
    for store in stores:
        store.close()


# -- schema versions ---------------------------------------------------------------------------------
def _tables(engine: sa.Engine) -> dict:
    inspector = sa.inspect(engine)
    return {
        name: {
            "columns": {
                c["name"]: (type(c["type"]).__name__, c["nullable"]) for c in inspector.get_columns(name)
            },
            "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
            "foreign_keys": sorted(
                (tuple(fk["constrained_columns"]), fk["referred_table"])
                for fk in inspector.get_foreign_keys(name)
            ),
            "indexes": sorted(tuple(i["column_names"]) for i in inspector.get_indexes(name)),
        }
        for name in inspector.get_table_names()
    }


def test_the_migrations_build_the_declared_tables(tmp_path) -> None:
    migrated = make_engine(f"sqlite:///{tmp_path}/migrated.db")
    assert upgrade(migrated) == SCHEMA_VERSION
    declared = make_engine(f"sqlite:///{tmp_path}/declared.db")
    metadata.create_all(declared)
    assert _tables(migrated) == _tables(declared)


def test_upgrade_from_version_1(tmp_path, cfg, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path}/v1.db"
    engine = make_engine(url)
    assert upgrade(engine, target=1) == 1
    assert "labels" not in sa.inspect(engine).get_table_names()
    with engine.begin() as connection:  # a row written by a version-1 store
        connection.execute(
            sa.text(
                "INSERT INTO predictions (prediction_id, created_at, client_key_id, content_sha256, "
                "media_kind, source, model_name, model_version, model_alias, weights_sha256, verdict, "
                "probability, calibration, reason, n_faces, n_frames, faces, frames, seconds) VALUES "
                "(:id, '2026-01-02 03:04:05.000000', '', :sha, 'image', 'service', 'm', '1', '', '', "
                "'REAL', 0.1, 'photo', '', 0, 0, '[]', '[]', '{}')"
            ),
            {"id": "a" * 32, "sha": "b" * 64},
        )
    engine.dispose()
    monkeypatch.setenv(DB_URL_ENV, url)
    with open_store(cfg) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.get("a" * 32)["created_at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert store.add_label("a" * 32, "real", "ann") == 1
        with store.engine.connect() as connection:
            applied = connection.execute(sa.select(schema_version.c.version)).scalars().all()
        assert applied == list(range(1, SCHEMA_VERSION + 1))
    with open_store(cfg) as store:  # a second open has nothing to do
        assert store.schema_version() == SCHEMA_VERSION


def test_a_failed_step_leaves_the_database_as_it_was(tmp_path, monkeypatch) -> None:
    from dfguard.feedback import schema

    def broken_step(connection) -> None:
        connection.exec_driver_sql("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("the last step failed")

    engine = make_engine(f"sqlite:///{tmp_path}/store.db")
    upgrade(engine, target=1)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, broken_step))
    monkeypatch.setattr(schema, "HEAD", len(schema.MIGRATIONS))
    with pytest.raises(RuntimeError, match="the last step failed"):
        upgrade(engine, target=len(schema.MIGRATIONS))
    # Steps 2 to the broken one ran in one transaction, DDL included: none left anything.
    assert set(sa.inspect(engine).get_table_names()) == {"schema_version", "predictions", "prediction_crops"}
    with engine.connect() as connection:
        assert schema.current_version(connection) == 1


def test_a_newer_schema_is_refused(store, cfg) -> None:
    with store.engine.begin() as connection:
        connection.execute(schema_version.insert().values(version=SCHEMA_VERSION + 1, applied_at=NOW))
    with pytest.raises(SchemaError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        open_store(cfg)


def test_a_file_that_is_not_a_database_is_refused(cfg) -> None:
    Path(cfg.root).mkdir(parents=True)
    (Path(cfg.root) / "predictions.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(sa.exc.DatabaseError):
        open_store(cfg)


# -- labels ------------------------------------------------------------------------------------------
def test_labels_are_appended_and_checked(store) -> None:
    first, second = _record(), _record()
    store.record(first)
    store.record(second)
    a = store.add_label(first.prediction_id, "fake", "ann", note="blending seam at the jaw")
    b = store.add_label(second.prediction_id, "real", "ann")
    c = store.add_label(first.prediction_id, "unsure", " bob ")
    assert a < b < c
    history = store.labels(first.prediction_id)
    assert history["label"].tolist() == ["fake", "unsure"] and history["reviewer"].tolist() == ["ann", "bob"]
    assert history["note"].tolist() == ["blending seam at the jaw", ""]
    assert str(history["created_at"].dtype) == "datetime64[ns, UTC]"
    assert len(store.labels()) == 3
    latest = store.latest_labels().set_index("prediction_id")["label"].to_dict()
    assert latest == {first.prediction_id: "unsure", second.prediction_id: "real"}

    with pytest.raises(ValueError, match="unknown prediction id"):
        store.add_label(uuid.uuid4().hex, "fake", "ann")
    for bad in ("FAKE", "skip", ""):
        with pytest.raises(ValueError, match="label must be one of fake, real, unsure"):
            store.add_label(first.prediction_id, bad, "ann")
    with pytest.raises(ValueError, match="reviewer"):
        store.add_label(first.prediction_id, "fake", "  ")
    # Append-only in the database too, not only through the API.
    for statement in ("UPDATE labels SET label = 'real'", "DELETE FROM labels"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as connection:
            connection.exec_driver_sql(statement)
    # The CHECK constraint, for writers that bypass the API.
    with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO labels (prediction_id, label, reviewer, note, created_at) "
                "VALUES (:p, 'x', 'a', '', :t)"
            ),
            {"p": first.prediction_id, "t": NOW.replace(tzinfo=None)},
        )
    assert len(store.labels()) == 3


# -- retention ---------------------------------------------------------------------------------------
def test_purge_keeps_labelled_predictions_and_shared_files(store, cfg) -> None:
    shared_upload = b"the same clip, uploaded twice"
    expired = _record(NOW - timedelta(days=40), crops=[_crop(1), _crop(2)], upload=b"only the expired one")
    labelled = _record(NOW - timedelta(days=40), crops=[_crop(1)])
    expired_shared = _record(NOW - timedelta(days=40), crops=[_crop(4)], upload=shared_upload)
    recent = _record(NOW - timedelta(days=1), crops=[_crop(3), _crop(4)], upload=shared_upload)
    for record in (expired, labelled, expired_shared, recent):
        store.record(record)
    store.add_label(labelled.prediction_id, "fake", "ann")
    gone_crop = store.get(expired.prediction_id)["crops"][1]["path"]
    gone_upload = store.get(expired.prediction_id)["upload_path"]
    size = gone_crop.stat().st_size + gone_upload.stat().st_size

    result = store.purge()  # the config's 30 days
    assert (result.predictions, result.crop_files, result.upload_files) == (2, 1, 1)
    assert result.bytes_freed == size
    assert abs(result.cutoff - (datetime.now(UTC) - timedelta(days=30))) < timedelta(minutes=1)
    assert store.get(expired.prediction_id) is None and store.get(expired_shared.prediction_id) is None
    assert not gone_crop.exists() and not gone_upload.exists()
    for kept in (labelled, recent):
        found = store.get(kept.prediction_id)
        assert all(crop["path"].is_file() for crop in found["crops"])
        assert found["upload_path"].is_file()
    with store.engine.connect() as connection:  # the crop rows went with their predictions
        crop_owners = set(connection.exec_driver_sql("SELECT prediction_id FROM prediction_crops").scalars())
    assert crop_owners == {labelled.prediction_id, recent.prediction_id}
    assert len(_files(Path(cfg.root) / "crops")) == 3  # crops 1 (labelled), 3 and 4 (recent)

    assert store.purge(0).predictions == 1  # the recent one; the labelled one stays, whatever its age
    assert store.count() == 1
    with pytest.raises(ValueError, match="0 or more"):
        store.purge(-1)


def test_a_purged_file_is_rewritten_by_a_later_prediction(store) -> None:
    store.record(_record(NOW - timedelta(days=40), crops=[_crop(5)]))
    store.purge()
    again = _record(crops=[_crop(5)])
    store.record(again)
    assert store.get(again.prediction_id)["crops"][0]["path"].is_file()


# -- the writer --------------------------------------------------------------------------------------
def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _written_order(store) -> list[str]:
    with store.engine.connect() as connection:
        return list(
            connection.exec_driver_sql("SELECT prediction_id FROM predictions ORDER BY rowid").scalars()
        )


def test_writer_submit_never_raises_and_flush_persists(store) -> None:
    writer = StoreWriter(store, retry_s=0.05)
    records = [_record() for _ in range(5)]
    for record in records:
        writer.submit(record)
    writer.submit(None)  # not a record: logged, never raised into the request
    assert writer.flush(timeout=10)
    assert _written_order(store) == [r.prediction_id for r in records]
    stats = writer.stats()
    assert (stats["written"], stats["pending"], stats["failed_attempts"], stats["dropped"]) == (5, 0, 0, 0)
    assert writer.close(timeout=5)
    writer.submit(_record())  # after close: counted as dropped, not raised
    assert writer.stats()["dropped"] == 1
    assert store.count() == 5  # the writer leaves a store it was given open


def test_writer_rides_out_an_outage(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    blocker = tmp_path / "down"
    blocker.write_text("a file where the store's folder should be")
    cfg = FeedbackConfig(root=str(blocker / "feedback"))
    opens = []

    def opener():
        opens.append(1)
        return open_store(cfg)  # fails while `blocker` is a file

    writer = StoreWriter(opener, retry_s=0.05, max_pending=100)
    records = [_record() for _ in range(3)]
    for record in records:
        writer.submit(record)
    _wait(lambda: writer.stats()["failed_attempts"] >= 3)
    stats = writer.stats()
    assert stats["pending"] == 3 and stats["written"] == 0
    assert stats["last_error"].startswith("NotADirectoryError")

    blocker.unlink()  # the store comes back
    blocker.mkdir()
    assert writer.flush(timeout=10)
    assert writer.stats()["written"] == 3 and len(opens) >= 4

    # Down again while writing files: a file where the crops folder goes.
    crops = blocker / "feedback" / "crops"
    shutil.rmtree(crops)
    crops.write_text("")
    later = [_record(crops=[_crop(10 + i)]) for i in range(3)]
    for record in later:
        writer.submit(record)
    before = writer.stats()["failed_attempts"]
    _wait(lambda: writer.stats()["failed_attempts"] >= before + 2)
    crops.unlink()
    assert writer.flush(timeout=10)
    assert writer.close(timeout=5)
    with open_store(cfg) as store:
        assert _written_order(store) == [r.prediction_id for r in records + later]  # in order, once each
        assert all(store.get(r.prediction_id)["crops"][0]["path"].is_file() for r in later)
    stats = writer.stats()
    assert stats["written"] == 6 and stats["dropped"] == 0 and stats["pending"] == 0


def test_writer_drops_the_oldest_beyond_max_pending(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    blocker = tmp_path / "down"
    blocker.write_text("")
    cfg = FeedbackConfig(root=str(blocker / "feedback"))
    writer = StoreWriter(lambda: open_store(cfg), retry_s=0.05, max_pending=3)
    records = [_record() for _ in range(6)]
    for record in records:
        writer.submit(record)
    _wait(lambda: writer.stats()["failed_attempts"] >= 2)
    assert writer.stats()["pending"] == 3 and writer.stats()["dropped"] == 3
    blocker.unlink()
    assert writer.flush(timeout=10)
    assert writer.close(timeout=5)
    with open_store(cfg) as store:
        assert _written_order(store) == [r.prediction_id for r in records[3:]]


def test_writer_drops_the_oldest_beyond_max_pending_bytes(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(DB_URL_ENV, raising=False)
    blocker = tmp_path / "down"
    blocker.write_text("")
    cfg = FeedbackConfig(root=str(blocker / "feedback"))
    writer = StoreWriter(lambda: open_store(cfg), retry_s=0.05, max_pending_bytes=2500)
    for _ in range(4):
        writer.submit(_record(crops=[], upload=bytes(1000)))
    _wait(lambda: writer.stats()["failed_attempts"] >= 2)
    assert writer.stats()["pending"] == 2 and writer.stats()["dropped"] == 2
    writer.close(timeout=0.1)


def test_writer_skips_a_record_the_store_refuses(store) -> None:
    writer = StoreWriter(store, retry_s=0.05)
    refused = PredictionRecord(**{**_record().__dict__, "content_sha256": "c" * 64})  # not the upload's hash
    good = _record()
    writer.submit(refused)
    writer.submit(good)
    assert writer.flush(timeout=10)
    stats = writer.stats()
    assert (stats["written"], stats["rejected"], stats["failed_attempts"]) == (1, 1, 0)
    assert "SHA-256" in stats["last_error"]
    assert store.get(good.prediction_id) is not None and store.get(refused.prediction_id) is None
    writer.close(timeout=5)


def test_writer_argument_checks(store) -> None:
    with pytest.raises(ValueError, match="retry_s"):
        StoreWriter(store, retry_s=0)
    with pytest.raises(ValueError, match="max_pending"):
        StoreWriter(store, max_pending=0)
