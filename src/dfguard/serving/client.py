"""A client of a running detection service, for `dfguard detect --server URL`: the same answers as a
local `detect`, judged by the service's champion."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

API_KEY_ENV = "DFGUARD_API_KEY"
RATE_LIMITED = 429
MAX_WAIT_S = 30.0  # a Retry-After longer than this is not waited for: the caller hears of it


class ServiceError(RuntimeError):
    """The service refused a request (auth, rate limit, size) or could not be reached."""


class DetectionClient:
    """`retries`: how often a call the service refused with 429 is sent again after its Retry-After
    (as a well-behaved client does; the bucket refills at `serve.rate_per_s`)."""

    def __init__(
        self, url: str, api_key: str | None = None, timeout_s: float = 300.0, retries: int = 5
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.retries = retries

    def detect(self, path: Path, explain: bool = False) -> dict[str, Any]:
        """The service's answer for one file (its statuses included); ServiceError when it answers none."""
        with path.open("rb") as handle:
            return self._detect(path.name, handle, explain, str(path))

    def detect_bytes(self, name: str, data: bytes, explain: bool = False) -> dict[str, Any]:
        """As `detect`, for an upload held in memory (the dashboard's); `name` is only shown, the service
        judges the bytes."""
        return self._detect(name, data, explain, name)

    def _detect(self, name: str, content: Any, explain: bool, shown: str) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            if hasattr(content, "seek"):
                content.seek(0)  # a retried upload is sent whole again
            try:
                response = self.http.post(
                    "/detect",
                    files={"file": (name, content)},
                    data={"explain": "true"} if explain else None,
                )
            except httpx.HTTPError as err:
                raise ServiceError(f"{self.http.base_url}: {err}") from err
            wait = _retry_after(response)
            if response.status_code != RATE_LIMITED or attempt == self.retries or wait > MAX_WAIT_S:
                break
            time.sleep(wait)
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise ServiceError(f"{shown}: HTTP {response.status_code} {message}")
        return response.json()

    def close(self) -> None:
        self.http.close()


def _retry_after(response: httpx.Response) -> float:
    """The seconds a 429 asks to wait (1 when it names none or an unreadable value)."""
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0
