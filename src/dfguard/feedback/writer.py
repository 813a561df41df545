"""Writes predictions to the store from a background thread, so that a request never waits for the
store nor fails because of it.

A write that fails (the database locked or down, the disk full, the store not even openable yet) is
logged and retried every `retry_s` seconds, in order, the records held in memory meanwhile. Memory is
bounded: beyond `max_pending` records (or `max_pending_bytes` of crops and uploads, since a video
upload can weigh hundreds of megabytes) the oldest are dropped and counted. A record the database
refuses outright (a constraint or a value it cannot hold) would fail the same way forever and hold up
every record behind it, so it is logged, counted as rejected and skipped instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from dfguard.feedback.record import PredictionRecord
from dfguard.feedback.store import PredictionStore

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING_BYTES = 1 << 30
_REASON_CHARS = 300


class StoreWriter:
    """A queue of records and the daemon thread that writes them to a store.

    `store` is an open store, or a function that opens one (called in the thread, again after each
    failure until it succeeds: the database may be unreachable when the service starts). A store the
    writer opened is closed by `close`.
    """

    def __init__(
        self,
        store: PredictionStore | Callable[[], PredictionStore],
        retry_s: float = 5.0,
        max_pending: int = 10000,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        name: str = "dfguard-store-writer",
    ) -> None:
        if retry_s <= 0:
            raise ValueError(f"retry_s must be positive, got {retry_s}")
        if max_pending < 1 or max_pending_bytes < 1:
            raise ValueError(
                f"max_pending and max_pending_bytes must be 1 or more, got {max_pending}, {max_pending_bytes}"
            )
        self.retry_s = retry_s
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._owns_store = not isinstance(store, PredictionStore)
        self._open_store: Callable[[], PredictionStore] = store if self._owns_store else lambda: store
        self._store: PredictionStore | None = None
        self._pending: deque[PredictionRecord] = deque()
        self._pending_bytes = 0
        self._in_flight: PredictionRecord | None = None
        self._closing = False
        self._changed = threading.Condition()  # guards every field above and below, signals progress
        self._retry_now = threading.Event()  # cuts a retry wait short (at close)
        self._written = self._failed_attempts = self._dropped = self._rejected = 0
        self._last_error: str | None = None
        self._failing = False  # in a run of failures: logged once, then again when it ends
        self._dropping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, record: PredictionRecord) -> None:
        """Queue a record for writing; returns at once and never raises."""
        try:
            with self._changed:
                if self._closing:
                    self._dropped += 1
                    log.warning("prediction %s not stored: the store writer is closed", record.prediction_id)
                    return
                size = _size(record)
                self._pending.append(record)
                self._pending_bytes += size
                self._drop_oldest()
                self._changed.notify_all()
        except Exception:
            log.exception("could not queue a prediction for the store")

    def stats(self) -> dict[str, Any]:
        with self._changed:
            return {
                "written": self._written,
                "failed_attempts": self._failed_attempts,
                "pending": len(self._pending) + (self._in_flight is not None),
                "dropped": self._dropped,
                "rejected": self._rejected,
                "last_error": self._last_error,
            }

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued record is written (or dropped); False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while self._pending or self._in_flight is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting records and give the queued ones until `timeout` to be written; True when all
        were. Records still failing then stay with the thread, which keeps retrying until the process
        exits."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._retry_now.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("store writer closed with %d predictions not yet stored", self.stats()["pending"])
            return False
        if self._owns_store and self._store is not None:
            self._store.close()
        return True

    # -- the thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if not self._pending:
                    return
                record = self._pending.popleft()
                self._pending_bytes -= _size(record)
                self._in_flight = record
            try:
                store = self._opened()
            except Exception as err:
                self._failed(record, "opening the store", err)
                continue
            try:
                store.record(record)
            except Exception as err:
                if _refused(err):
                    self._rejected_record(record, err)
                else:
                    self._failed(record, f"writing prediction {record.prediction_id}", err)
                continue
            with self._changed:
                self._in_flight = None
                self._written += 1
                if self._failing:
                    log.info(
                        "prediction store writes resumed (%d pending, %d dropped so far)",
                        len(self._pending),
                        self._dropped,
                    )
                self._failing = self._dropping = False
                self._changed.notify_all()

    def _opened(self) -> PredictionStore:
        if self._store is None:
            self._store = self._open_store()
            log.info("prediction store open: %s", self._store.url)
        return self._store

    def _failed(self, record: PredictionRecord, action: str, err: Exception) -> None:
        """Count the failure, put the record back at the head of the queue and wait `retry_s`."""
        reason = _reason(err)
        with self._changed:
            self._failed_attempts += 1
            first, self._failing = not self._failing, True
            changed, self._last_error = reason != self._last_error, reason
            self._in_flight = None
            self._pending.appendleft(record)
            self._pending_bytes += _size(record)
            self._drop_oldest()
            pending = len(self._pending)
            self._changed.notify_all()
        if first or changed:
            log.warning(
                "prediction store unavailable (%s: %s); %d pending, retrying every %g s",
                action,
                reason,
                pending,
                self.retry_s,
            )
        else:
            log.debug("prediction store still unavailable (%s): %s", action, reason)
        self._retry_now.wait(self.retry_s)
        self._retry_now.clear()

    def _rejected_record(self, record: PredictionRecord, err: Exception) -> None:
        log.error("prediction %s refused by the store, not stored: %s", record.prediction_id, _reason(err))
        with self._changed:
            self._in_flight = None
            self._rejected += 1
            self._last_error = _reason(err)
            self._changed.notify_all()

    def _drop_oldest(self) -> None:
        """Keep the queue within its limits, dropping the oldest (the newest record always stays)."""
        while len(self._pending) > 1 and (
            len(self._pending) > self.max_pending or self._pending_bytes > self.max_pending_bytes
        ):
            dropped = self._pending.popleft()
            self._pending_bytes -= _size(dropped)
            self._dropped += 1
            if not self._dropping:
                log.warning(
                    "prediction store writer full (%d records, %d bytes): dropping the oldest",
                    len(self._pending),
                    self._pending_bytes,
                )
                self._dropping = True


def _size(record: PredictionRecord) -> int:
    """The memory a queued record holds beyond its small fields."""
    return len(record.upload or b"") + sum(crop.nbytes for crop in record.crops)


def _refused(err: Exception) -> bool:
    """Whether a write failed for its data, and would fail again (not for the store's state)."""
    if isinstance(err, sa.exc.DBAPIError):
        return isinstance(err, sa.exc.IntegrityError | sa.exc.DataError)
    return isinstance(err, ValueError | TypeError | sa.exc.StatementError)


def _reason(err: Exception) -> str:
    """The error's first line, short: a database error's text would carry the statement's parameters."""
    message = str(err.orig) if isinstance(err, sa.exc.DBAPIError) else str(err)
    first = message.strip().splitlines()[0] if message.strip() else ""
    return f"{type(err).__name__}: {first}"[:_REASON_CHARS]
