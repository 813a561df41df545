"""The detection service the service tests share (the session fixture `service` in
tests/code/conftest.py starts it): its settings, keys, and a handle on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from dfguard.config import FeedbackConfig, RegistryConfig

SECRET, ADMIN_SECRET, BURST_SECRET = "dfg_test-client-key", "dfg_test-admin-key", "dfg_test-burst-key"
MAX_IMAGE_MB, MAX_VIDEO_MB = 1, 2
RATE_PER_S, RATE_BURST = 20.0, 40
JOB_TTL_S = 4.0


@dataclass
class Service:
    url: str
    root: Path
    registry: RegistryConfig
    feedback: FeedbackConfig
    log: Path
    pid: int  # of `dfguard serve`, whose process tree is the service

    def client(self, secret: str = SECRET) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {secret}"}, timeout=120)
