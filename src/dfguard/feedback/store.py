"""The prediction store: every prediction the service makes, reviewers' labels, and retention.

Rows live in a database (a SQLite file by default, PostgreSQL by URL); face crops and uploads are
files under the store's root, named by content hash, so the database stays small and a crop two
predictions share is kept once. Files are written before the row that names them, atomically (a
temporary file renamed into place), so a reader never sees half a file and a retried write reuses
what a failed one left.

`purge` may delete a file a concurrent write is about to reuse. Both run under the files lock
(SQLite's write lock, a PostgreSQL advisory lock: shared by writes, exclusive for a purge); a write
checks its files again once it holds the lock, and puts back any a purge deleted meanwhile.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import sqlalchemy as sa

from dfguard.config import FeedbackConfig
from dfguard.feedback.db import FILES_LOCK, make_engine, write_transaction
from dfguard.feedback.record import (
    QUALITY_KEYS,
    PredictionRecord,
    check_label,
    check_manipulation,
    check_sha256,
    check_upload_suffix,
    utc,
)
from dfguard.feedback.schema import current_version, labels, prediction_crops, predictions, upgrade

log = logging.getLogger(__name__)

DB_URL_ENV = "DFGUARD_DB_URL"
DB_FILE = "predictions.db"
CROPS_DIR = "crops"
UPLOADS_DIR = "uploads"
# `predictions()` leaves out the per-face and per-frame JSON (`get` has them): one row per prediction,
# scalars and the feature vector, what the dashboard lists and drift reports compare.
LISTED_COLUMNS = [
    column.name for column in predictions.columns if column.name not in ("faces", "frames", "seconds")
]
FLOAT_COLUMNS = [
    "probability",
    "logit",
    "appearance_logit",
    "temporal_std",
    "flip_rate",
    "drift",
    "threshold",
    *QUALITY_KEYS,
]
LABEL_COLUMNS = [column.name for column in labels.columns]
# Hashes checked per statement by `purge`: SQLite's bound-parameter limit is far above, and a few
# hundred keep each statement small.
_CHUNK = 500


def store_url(cfg: FeedbackConfig) -> str:
    """The database URL: $DFGUARD_DB_URL, else `db_url`, else the SQLite file under `root`."""
    url = os.environ.get(DB_URL_ENV, "").strip() or cfg.db_url.strip()
    return url or f"sqlite:///{(Path(cfg.root).resolve() / DB_FILE).as_posix()}"


def open_store(cfg: FeedbackConfig) -> PredictionStore:
    """Connect to the store, making its folders and bringing its schema to this code's version."""
    root = Path(cfg.root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(store_url(cfg))
    try:
        upgrade(engine)
    except BaseException:
        engine.dispose()
        raise
    return PredictionStore(engine, root, keep_uploads=cfg.keep_uploads, retention_days=cfg.retention_days)


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime  # predictions made before this, without a label, were deleted
    predictions: int
    crop_files: int  # files no remaining prediction names
    upload_files: int
    bytes_freed: int


@dataclass(frozen=True)
class StoreSummary:
    url: str  # any password masked
    schema_version: int
    predictions: int
    labelled: int  # predictions with at least one label
    labels: int
    first: datetime | None
    last: datetime | None
    by_verdict: dict[str, int]
    by_model_version: dict[str, int]  # "" is a local model folder


@dataclass(frozen=True)
class _File:
    path: Path
    data: bytes


class PredictionStore:
    """Reads and writes one store; safe to share between threads (each call takes its own connection)."""

    def __init__(
        self, engine: sa.Engine, root: Path, keep_uploads: bool = True, retention_days: int = 90
    ) -> None:
        self.engine = engine
        self.root = Path(root)
        self.keep_uploads = keep_uploads
        self.retention_days = retention_days

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> PredictionStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    # -- files ---------------------------------------------------------------------------------------
    def crop_path(self, crop_sha256: str) -> Path:
        check_sha256(crop_sha256, "crop_sha256")
        return self.root / CROPS_DIR / crop_sha256[:2] / f"{crop_sha256}.png"

    def upload_path(self, content_sha256: str, suffix: str) -> Path:
        check_sha256(content_sha256, "content_sha256")
        check_upload_suffix(suffix)
        return self.root / UPLOADS_DIR / content_sha256[:2] / f"{content_sha256}{suffix}"

    # -- writes --------------------------------------------------------------------------------------
    def record(self, record: PredictionRecord) -> None:
        """Write a prediction with its crops and upload; a prediction_id already stored is left as it is,
        so a write retried after a failure (even one that stored the row) never duplicates."""
        crops = [self._crop_file(crop) for crop in record.crops]
        files = list(crops)
        upload_suffix = None
        if self.keep_uploads and record.upload is not None:
            data = bytes(record.upload)
            if hashlib.sha256(data).hexdigest() != record.content_sha256:
                raise ValueError(
                    f"prediction {record.prediction_id}: the upload's SHA-256 is not content_sha256"
                )
            upload_suffix = record.upload_suffix
            files.append(_File(self.upload_path(record.content_sha256, upload_suffix), data))
        # Written before the transaction, so the database's write lock is never held while a large
        # upload goes to disk.
        for file in files:
            _save(file)
        crop_rows = [
            {
                "prediction_id": record.prediction_id,
                "position": position,
                "crop_sha256": file.path.stem,
                **_face_of(record.faces, position),
            }
            for position, file in enumerate(crops)
        ]
        try:
            with write_transaction(self.engine, lock=FILES_LOCK, shared=True) as connection:
                if self._exists(connection, record.prediction_id):
                    return
                for file in files:
                    if not file.path.exists():  # a purge deleted it since it was saved above
                        _save(file)
                connection.execute(predictions.insert().values(_prediction_row(record, upload_suffix)))
                if crop_rows:
                    connection.execute(prediction_crops.insert(), crop_rows)
        except sa.exc.IntegrityError:
            # Another worker stored the same prediction between the check and the insert.
            with self.engine.connect() as connection:
                if self._exists(connection, record.prediction_id):
                    return
            raise

    def add_label(
        self,
        prediction_id: str,
        label: str,
        reviewer: str,
        note: str = "",
        manipulation: str | None = None,
    ) -> int:
        """Append a reviewer's label and return its id. Labels are never changed: a new label of the
        same prediction supersedes the old one in `latest_labels` (the reviewer's own, in
        `reviewer_labels`), and both stay in `labels`."""
        check_label(label)
        manipulation = check_manipulation(manipulation)
        if not isinstance(reviewer, str) or not reviewer.strip():
            raise ValueError("reviewer must name who labelled (a non-empty string)")
        if not isinstance(note, str):
            raise ValueError(f"note must be a string, got {type(note).__name__}")
        with write_transaction(self.engine) as connection:
            if not self._exists(connection, prediction_id):
                raise ValueError(f"unknown prediction id {prediction_id!r}")
            inserted = connection.execute(
                labels.insert().values(
                    prediction_id=prediction_id,
                    label=label,
                    reviewer=reviewer.strip(),
                    note=note,
                    manipulation=manipulation,
                    created_at=datetime.now(UTC),
                )
            )
            return int(inserted.inserted_primary_key[0])

    def purge(self, older_than_days: int | None = None) -> PurgeResult:
        """Delete the predictions made more than `older_than_days` ago (default: the config's
        retention) that no reviewer labelled (labelled ones are training data), their crop rows, and
        the crop and upload files no remaining prediction names."""
        days = self.retention_days if older_than_days is None else older_than_days
        if days < 0:
            raise ValueError(f"older_than_days must be 0 or more, got {days}")
        cutoff = datetime.now(UTC) - timedelta(days=days)
        labelled = sa.exists().where(labels.c.prediction_id == predictions.c.prediction_id)
        expired = sa.and_(predictions.c.created_at < cutoff, ~labelled)
        freed = 0
        with write_transaction(self.engine, lock=FILES_LOCK) as connection:
            crop_candidates = set(
                connection.execute(
                    sa.select(prediction_crops.c.crop_sha256)
                    .distinct()
                    .where(
                        prediction_crops.c.prediction_id.in_(
                            sa.select(predictions.c.prediction_id).where(expired)
                        )
                    )
                ).scalars()
            )
            # One statement, so a label added meanwhile (PostgreSQL) either keeps its prediction or
            # fails this purge on the foreign key; crop rows go with their prediction (ON DELETE CASCADE).
            deleted = connection.execute(
                predictions.delete()
                .where(expired)
                .returning(predictions.c.content_sha256, predictions.c.upload_suffix)
            ).all()
            upload_candidates = {(sha, suffix) for sha, suffix in deleted if suffix is not None}
            crops_kept = _referenced(connection, prediction_crops.c.crop_sha256, crop_candidates)
            uploads_kept = _referenced_uploads(connection, {sha for sha, _ in upload_candidates})
            # Deleted while the files lock is held, so no write can be reusing one (see the module
            # docstring); a file that cannot be deleted is logged and left, its rows are gone anyway.
            crop_files = [self.crop_path(sha) for sha in sorted(crop_candidates - crops_kept)]
            upload_files = [
                self.upload_path(sha, suffix) for sha, suffix in sorted(upload_candidates - uploads_kept)
            ]
            removed_crops, crop_bytes = _remove(crop_files)
            removed_uploads, upload_bytes = _remove(upload_files)
            freed = crop_bytes + upload_bytes
        result = PurgeResult(cutoff, len(deleted), removed_crops, removed_uploads, freed)
        log.info(
            "purged %d predictions made before %s, %d crop and %d upload files (%d bytes)",
            result.predictions,
            cutoff.isoformat(timespec="seconds"),
            result.crop_files,
            result.upload_files,
            freed,
        )
        return result

    # -- reads ---------------------------------------------------------------------------------------
    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(predictions)).scalar_one())

    def schema_version(self) -> int:
        with self.engine.connect() as connection:
            return current_version(connection)

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        """Everything stored about a prediction, with `quality` as a dict, `crops` (each with its file's
        `path`) and `upload_path` (None when the upload was not kept); None for an unknown id."""
        with self.engine.connect() as connection:
            row = (
                connection.execute(sa.select(predictions).where(predictions.c.prediction_id == prediction_id))
                .mappings()
                .first()
            )
            if row is None:
                return None
            crops = (
                connection.execute(
                    sa.select(prediction_crops)
                    .where(prediction_crops.c.prediction_id == prediction_id)
                    .order_by(prediction_crops.c.position)
                )
                .mappings()
                .all()
            )
        found = {key: value for key, value in row.items() if key not in QUALITY_KEYS}
        found["quality"] = {key: row[key] for key in QUALITY_KEYS}
        found["crops"] = [
            {
                **{k: v for k, v in crop.items() if k != "prediction_id"},
                "path": self.crop_path(crop["crop_sha256"]),
            }
            for crop in crops
        ]
        suffix = row["upload_suffix"]
        found["upload_path"] = None if suffix is None else self.upload_path(row["content_sha256"], suffix)
        return found

    def predictions(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        verdicts: Iterable[str] | None = None,
        model_version: str | None = None,
        limit: int | None = None,
        labelled: bool | None = None,
    ) -> pd.DataFrame:
        """One row per prediction, oldest first: its scalar columns, the quality measures as columns,
        `features` as a list, and its latest label (`label`, `reviewer`, `labelled_at`; None without).

        `since` is inclusive and `until` exclusive (both timezone-aware); `limit` keeps the newest;
        `labelled` True keeps labelled predictions only, False unlabelled ones (a review queue).
        """
        latest = self._latest_labels_query().subquery()
        query = sa.select(
            *(predictions.c[name] for name in LISTED_COLUMNS),
            latest.c.label,
            latest.c.reviewer,
            latest.c.created_at.label("labelled_at"),
        ).select_from(predictions.outerjoin(latest, latest.c.prediction_id == predictions.c.prediction_id))
        if since is not None:
            query = query.where(predictions.c.created_at >= utc(since, "since"))
        if until is not None:
            query = query.where(predictions.c.created_at < utc(until, "until"))
        if verdicts is not None:
            query = query.where(predictions.c.verdict.in_(list(verdicts)))
        if model_version is not None:
            query = query.where(predictions.c.model_version == model_version)
        if labelled is not None:
            query = query.where(latest.c.label.is_not(None) if labelled else latest.c.label.is_(None))
        query = query.order_by(predictions.c.created_at.desc(), predictions.c.prediction_id.desc())
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be 0 or more, got {limit}")
            query = query.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        frame = pd.DataFrame(
            [dict(row) for row in reversed(rows)],
            columns=[*LISTED_COLUMNS, "label", "reviewer", "labelled_at"],
        )
        for name in ("created_at", "labelled_at"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        for name in FLOAT_COLUMNS:
            frame[name] = frame[name].astype("float64")
        for name in ("n_faces", "n_frames"):
            frame[name] = frame[name].astype("int64")
        return frame

    def labels(self, prediction_id: str | None = None) -> pd.DataFrame:
        """Every label, oldest first (one prediction's, given its id)."""
        query = sa.select(labels).order_by(labels.c.id)
        if prediction_id is not None:
            query = query.where(labels.c.prediction_id == prediction_id)
        return self._label_frame(query)

    def latest_labels(self) -> pd.DataFrame:
        """The latest label of each labelled prediction, oldest first."""
        return self._label_frame(self._latest_labels_query().order_by(labels.c.id))

    def reviewer_labels(self) -> pd.DataFrame:
        """Each reviewer's latest label of each prediction they labelled, oldest first: what agreement
        between reviewers is measured on (a reviewer who changed their mind counts once)."""
        newest = sa.select(sa.func.max(labels.c.id)).group_by(labels.c.prediction_id, labels.c.reviewer)
        return self._label_frame(sa.select(labels).where(labels.c.id.in_(newest)).order_by(labels.c.id))

    def summary(self) -> StoreSummary:
        """Counts for `dfguard feedback stats`."""
        with self.engine.connect() as connection:
            total, first, last = connection.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.min(predictions.c.created_at),
                    sa.func.max(predictions.c.created_at),
                )
            ).one()

            def counts(column: sa.Column[str]) -> dict[str, int]:
                grouped = connection.execute(
                    sa.select(column, sa.func.count()).group_by(column).order_by(column)
                )
                return {key: int(n) for key, n in grouped}

            n_labels, n_labelled = connection.execute(
                sa.select(sa.func.count(), sa.func.count(sa.distinct(labels.c.prediction_id)))
            ).one()
            return StoreSummary(
                url=self.url,
                schema_version=current_version(connection),
                predictions=int(total),
                labelled=int(n_labelled),
                labels=int(n_labels),
                first=first,
                last=last,
                by_verdict=counts(predictions.c.verdict),
                by_model_version=counts(predictions.c.model_version),
            )

    # -- helpers -------------------------------------------------------------------------------------
    def _crop_file(self, crop: Any) -> _File:
        import cv2

        encoded, png = cv2.imencode(".png", crop)
        if not encoded:
            raise ValueError(f"a face crop of shape {crop.shape} could not be encoded as PNG")
        data = png.tobytes()
        return _File(self.crop_path(hashlib.sha256(data).hexdigest()), data)

    @staticmethod
    def _exists(connection: sa.Connection, prediction_id: str) -> bool:
        query = sa.select(predictions.c.prediction_id).where(predictions.c.prediction_id == prediction_id)
        return connection.execute(query).first() is not None

    @staticmethod
    def _latest_labels_query() -> sa.Select[Any]:
        newest = sa.select(sa.func.max(labels.c.id)).group_by(labels.c.prediction_id)
        return sa.select(labels).where(labels.c.id.in_(newest))

    def _label_frame(self, query: sa.Select[Any]) -> pd.DataFrame:
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        frame = pd.DataFrame([dict(row) for row in rows], columns=LABEL_COLUMNS)
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
        frame["id"] = frame["id"].astype("int64")
        return frame


def _prediction_row(record: PredictionRecord, upload_suffix: str | None) -> dict[str, Any]:
    return {
        "prediction_id": record.prediction_id,
        "created_at": record.created_at,
        "client_key_id": record.client_key_id,
        "content_sha256": record.content_sha256,
        "media_kind": record.media_kind,
        "source": record.source,
        "model_name": record.model_name,
        "model_version": record.model_version,
        "model_alias": record.model_alias,
        "weights_sha256": record.weights_sha256,
        "verdict": record.verdict,
        "probability": record.probability,
        "logit": record.logit,
        "appearance_logit": record.appearance_logit,
        "temporal_std": record.temporal_std,
        "flip_rate": record.flip_rate,
        "drift": record.drift,
        "threshold": record.threshold,
        "calibration": record.calibration,
        "reason": record.reason,
        "n_faces": record.n_faces,
        "n_frames": record.n_frames,
        **record.stored_quality,
        "features": record.features,
        "faces": record.faces,
        "frames": record.frames,
        "seconds": record.seconds,
        "upload_suffix": upload_suffix,
    }


def _face_of(faces: list[dict[str, Any]], position: int) -> dict[str, Any]:
    """Where the crop at `position` came from: crops are made one per face, in the faces' order."""
    face = faces[position] if position < len(faces) else {}
    probability = face.get("probability")
    return {
        "frame_index": face.get("frame_index"),
        "track_id": face.get("track_id"),
        "probability": None if probability is None else float(probability),
    }


def _save(file: _File) -> None:
    """Write `file` atomically; a file already there has the same content (its name is its hash)."""
    if file.path.exists():
        return
    file.path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(
        dir=file.path.parent, prefix=f".{file.path.name}.", suffix=".tmp"
    )
    try:
        os.fchmod(
            descriptor, 0o644
        )  # mkstemp's 0600 would hide the files from a dashboard run as another user
        with os.fdopen(descriptor, "wb") as out:
            out.write(file.data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, file.path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    ordered = sorted(values)
    for start in range(0, len(ordered), _CHUNK):
        yield ordered[start : start + _CHUNK]


def _referenced(connection: sa.Connection, column: sa.Column[str], hashes: set[str]) -> set[str]:
    """The hashes some row still names."""
    found: set[str] = set()
    for chunk in _chunks(hashes):
        found |= set(connection.execute(sa.select(column).distinct().where(column.in_(chunk))).scalars())
    return found


def _referenced_uploads(connection: sa.Connection, content_hashes: set[str]) -> set[tuple[str, str]]:
    """The (content hash, suffix) of the uploads some remaining prediction names."""
    found: set[tuple[str, str]] = set()
    for chunk in _chunks(content_hashes):
        query = (
            sa.select(predictions.c.content_sha256, predictions.c.upload_suffix)
            .distinct()
            .where(predictions.c.content_sha256.in_(chunk), predictions.c.upload_suffix.is_not(None))
        )
        found |= {(sha, suffix) for sha, suffix in connection.execute(query)}
    return found


def _remove(paths: list[Path]) -> tuple[int, int]:
    """Delete files; returns how many and their bytes."""
    removed = freed = 0
    for path in paths:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as err:
            log.warning("could not delete %s: %s", path, err)
            continue
        removed += 1
        freed += size
    return removed, freed
