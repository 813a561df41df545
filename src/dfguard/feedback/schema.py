"""The store's tables and how a database is brought to them.

Versioning: a `schema_version` table (one row per step applied, with when) and `MIGRATIONS`, an
ordered list of steps in code; step N takes a database from version N-1 to N. `upgrade` applies the
missing steps and their version rows in one transaction, so a failed step leaves the database as it
was, and it refuses a database newer than the code (an older dfguard must not write a schema it does
not know). Concurrent workers starting at once take turns: SQLite's write lock, PostgreSQL's advisory
lock.

Why not Alembic: the store's migrations are a few table creations that must ship inside the package
and run from `open_store` in every worker, on SQLite or PostgreSQL. Alembic needs a script folder and
an env.py shipped as data, is not one of dfguard's own dependencies (MLflow brings it), and its default
`alembic_version` table is MLflow's too, which collides when a team puts both stores in one
PostgreSQL database. Steps here are plain SQLAlchemy Core.

A step is frozen once released: it defines the tables as they were at its version, not by reusing the
current definitions below (which later steps change). `tests/code/test_feedback_store.py` checks that
the steps build exactly the tables defined here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine

from dfguard.feedback.db import MIGRATION_LOCK, masked_url, write_transaction
from dfguard.feedback.record import LABELS, QUALITY_KEYS, ROLES


class SchemaError(RuntimeError):
    """A database this code cannot use: its schema is newer than the code."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, stored as naive UTC: SQLite has no time zones, so both
    databases hold the same values and compare them the same way."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime cannot be stored (its zone is unknown): {value!r}")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("prediction_id", sa.String(32), primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
    sa.Column("client_key_id", sa.String, nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("media_kind", sa.String(8), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("model_name", sa.String, nullable=False),
    sa.Column("model_version", sa.String, nullable=False, index=True),
    sa.Column("model_alias", sa.String, nullable=False),
    sa.Column("weights_sha256", sa.String(64), nullable=False),
    sa.Column("verdict", sa.String(32), nullable=False, index=True),
    sa.Column("probability", sa.Float),
    sa.Column("logit", sa.Float),
    sa.Column("appearance_logit", sa.Float),
    sa.Column("temporal_std", sa.Float),
    sa.Column("flip_rate", sa.Float),
    sa.Column("drift", sa.Float),
    sa.Column("calibration", sa.String, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("n_faces", sa.Integer, nullable=False),
    sa.Column("n_frames", sa.Integer, nullable=False),
    *(sa.Column(key, sa.Float) for key in QUALITY_KEYS),
    sa.Column("features", sa.JSON(none_as_null=True)),
    sa.Column("faces", sa.JSON, nullable=False),
    sa.Column("frames", sa.JSON, nullable=False),
    sa.Column("seconds", sa.JSON, nullable=False),
    sa.Column("upload_suffix", sa.String(6)),  # of the saved upload; NULL when none was saved
    # The decision threshold of the calibration that judged it (a review queue ranks by the distance to
    # it); NULL for rows written before schema version 3 and for statuses.
    sa.Column("threshold", sa.Float),
)

prediction_crops = sa.Table(
    "prediction_crops",
    metadata,
    sa.Column(
        "prediction_id",
        sa.String(32),
        sa.ForeignKey("predictions.prediction_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("crop_sha256", sa.String(64), nullable=False, index=True),
    sa.Column("frame_index", sa.Integer),
    sa.Column("track_id", sa.Integer),
    sa.Column("probability", sa.Float),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "prediction_id", sa.String(32), sa.ForeignKey("predictions.prediction_id"), nullable=False, index=True
    ),
    sa.Column("label", sa.String(8), nullable=False),
    sa.Column("reviewer", sa.String, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("manipulation", sa.String(32)),  # the reviewer's guess of how a fake was made; NULL: none
    sa.CheckConstraint(f"label IN ({', '.join(repr(label) for label in LABELS)})", name="labels_label"),
    # Ids are never reused, so the highest id of a prediction is its latest label.
    sqlite_autoincrement=True,
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(128), nullable=False),  # bcrypt, salt included
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint(f"role IN ({', '.join(repr(role) for role in ROLES)})", name="users_role"),
)

# One reviewer holds an item at a time; a lease past `expires_at` is free for the next reviewer.
leases = sa.Table(
    "leases",
    metadata,
    sa.Column(
        "prediction_id",
        sa.String(32),
        sa.ForeignKey("predictions.prediction_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("reviewer", sa.String(64), nullable=False, index=True),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)


def _v1_predictions(connection: Connection) -> None:
    """The predictions the service records, and their face crops."""
    frozen = sa.MetaData()
    sa.Table(
        "schema_version",
        frozen,
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("applied_at", UTCDateTime, nullable=False),
    )
    sa.Table(
        "predictions",
        frozen,
        sa.Column("prediction_id", sa.String(32), primary_key=True),
        sa.Column("created_at", UTCDateTime, nullable=False, index=True),
        sa.Column("client_key_id", sa.String, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("media_kind", sa.String(8), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String, nullable=False),
        sa.Column("model_version", sa.String, nullable=False, index=True),
        sa.Column("model_alias", sa.String, nullable=False),
        sa.Column("weights_sha256", sa.String(64), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False, index=True),
        *(
            sa.Column(name, sa.Float)
            for name in ("probability", "logit", "appearance_logit", "temporal_std", "flip_rate", "drift")
        ),
        sa.Column("calibration", sa.String, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("n_faces", sa.Integer, nullable=False),
        sa.Column("n_frames", sa.Integer, nullable=False),
        *(
            sa.Column(name, sa.Float)
            for name in ("face_px", "sharpness", "brightness", "jpeg_quality", "blockiness")
        ),
        sa.Column("features", sa.JSON(none_as_null=True)),
        sa.Column("faces", sa.JSON, nullable=False),
        sa.Column("frames", sa.JSON, nullable=False),
        sa.Column("seconds", sa.JSON, nullable=False),
        sa.Column("upload_suffix", sa.String(6)),
    )
    sa.Table(
        "prediction_crops",
        frozen,
        sa.Column(
            "prediction_id",
            sa.String(32),
            sa.ForeignKey("predictions.prediction_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("crop_sha256", sa.String(64), nullable=False, index=True),
        sa.Column("frame_index", sa.Integer),
        sa.Column("track_id", sa.Integer),
        sa.Column("probability", sa.Float),
    )
    frozen.create_all(connection, checkfirst=False)


def _v2_labels(connection: Connection) -> None:
    """Reviewers' labels: append-only, enforced by the database as well as by the store's API, since
    they are training data and their history is the audit trail."""
    frozen = sa.MetaData()
    sa.Table("predictions", frozen, sa.Column("prediction_id", sa.String(32), primary_key=True))
    table = sa.Table(
        "labels",
        frozen,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "prediction_id",
            sa.String(32),
            sa.ForeignKey("predictions.prediction_id"),
            nullable=False,
            index=True,
        ),
        sa.Column("label", sa.String(8), nullable=False),
        sa.Column("reviewer", sa.String, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("label IN ('fake', 'real', 'unsure')", name="labels_label"),
        sqlite_autoincrement=True,
    )
    table.create(connection, checkfirst=False)
    refusal = "labels are append-only"
    if connection.dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            connection.exec_driver_sql(
                f"CREATE TRIGGER labels_append_only_{event.lower()} BEFORE {event} ON labels "
                f"BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
            )
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(
            "CREATE FUNCTION labels_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{refusal}'; END $$"
        )
        connection.exec_driver_sql(
            "CREATE TRIGGER labels_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON labels "
            "FOR EACH STATEMENT EXECUTE FUNCTION labels_append_only()"
        )


def _v3_review(connection: Connection) -> None:
    """The reviewer dashboard: its users, the leases that keep two reviewers off one item, a label's
    manipulation kind, and each prediction's decision threshold (the queue ranks by distance to it)."""
    connection.exec_driver_sql("ALTER TABLE predictions ADD COLUMN threshold FLOAT")
    # A new nullable column is no UPDATE: the append-only triggers are untouched.
    connection.exec_driver_sql("ALTER TABLE labels ADD COLUMN manipulation VARCHAR(32)")
    frozen = sa.MetaData()
    sa.Table("predictions", frozen, sa.Column("prediction_id", sa.String(32), primary_key=True))
    sa.Table(
        "users",
        frozen,
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.CheckConstraint("role IN ('reviewer', 'engineer')", name="users_role"),
    )
    sa.Table(
        "leases",
        frozen,
        sa.Column(
            "prediction_id",
            sa.String(32),
            sa.ForeignKey("predictions.prediction_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("reviewer", sa.String(64), nullable=False, index=True),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    frozen.create_all(connection, tables=[frozen.tables["users"], frozen.tables["leases"]], checkfirst=False)


# Append only; never edit or reorder a released step (a database records which it has applied).
MIGRATIONS: tuple[Callable[[Connection], None], ...] = (_v1_predictions, _v2_labels, _v3_review)
HEAD = len(MIGRATIONS)


def current_version(connection: Connection) -> int:
    """The schema version of a database; 0 for one the store has never touched."""
    if not sa.inspect(connection).has_table("schema_version"):
        return 0
    return connection.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0


def upgrade(engine: Engine, target: int = HEAD) -> int:
    """Apply the missing steps up to `target` in one transaction and return the version reached.

    Raises SchemaError for a database newer than this code.
    """
    if not 0 <= target <= HEAD:
        raise ValueError(f"schema version {target} does not exist (this code knows 1 to {HEAD})")
    with write_transaction(engine, lock=MIGRATION_LOCK) as connection:
        version = current_version(connection)
        if version > HEAD:
            raise SchemaError(
                f"{masked_url(str(engine.url))}: the prediction store is at schema version {version}, newer "
                f"than this dfguard knows ({HEAD}): upgrade dfguard to use it"
            )
        for step in range(version + 1, target + 1):
            MIGRATIONS[step - 1](connection)
            connection.execute(schema_version.insert().values(version=step, applied_at=datetime.now(UTC)))
        return max(version, target)
