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

    def detect(self, path: Path) -> dict[str, Any]:
        """The service's answer for one file (its statuses included); ServiceError when it answers none."""
        try:
            with path.open("rb") as handle:
                response = self.http.post("/detect", files={"file": (path.name, handle)})
        except httpx.HTTPError as err:
            raise ServiceError(f"{self.http.base_url}: {err}") from err
        if response.status_code != 200:
            try:
                error = response.json()["error"]
                message = f"{error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise ServiceError(f"{path}: HTTP {response.status_code} {message}")
        return response.json()

    def close(self) -> None:
        self.http.close()
