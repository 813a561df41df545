"""A client of a running detection service, for `dfguard detect --server URL`: the same answers as a
local `detect`, judged by the service's champion."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

API_KEY_ENV = "DFGUARD_API_KEY"


class ServiceError(RuntimeError):
    """The service refused a request (auth, rate limit, size) or could not be reached."""


class DetectionClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 300.0) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)

    def detect(self, path: Path, explain: bool = False) -> dict[str, Any]:
        """The service's answer for one file (its statuses included); ServiceError when it answers none."""
        with path.open("rb") as handle:
            return self._detect(path.name, handle, explain, str(path))

    def detect_bytes(self, name: str, data: bytes, explain: bool = False) -> dict[str, Any]:
        """As `detect`, for an upload held in memory (the dashboard's); `name` is only shown, the service
        judges the bytes."""
        return self._detect(name, data, explain, name)

    def _detect(self, name: str, content: Any, explain: bool, shown: str) -> dict[str, Any]:
        try:
            response = self.http.post(
                "/detect",
                files={"file": (name, content)},
                data={"explain": "true"} if explain else None,
            )
        except httpx.HTTPError as err:
            raise ServiceError(f"{self.http.base_url}: {err}") from err
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
