"""Real servers for tests: a `dfguard` command (serve, dashboard) started in its own process group on a
free localhost port, waited for, and stopped with everything it spawned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dfguard.runtime import TELEMETRY_OFF
from dfguard.serving.launch import wait_until_ready

STARTUP_TIMEOUT_S = 180
DFGUARD = Path(sys.executable).parent / "dfguard"


@contextmanager
def dfguard_server(
    args: list[str],
    url: str,
    log: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    ready_path: str = "/readyz",
) -> Iterator[subprocess.Popen]:
    """`dfguard ARGS` until the block ends; its output goes to `log`."""
    environment = {**os.environ, **TELEMETRY_OFF, **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(DFGUARD), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=cwd,
            start_new_session=True,
        )
    try:
        wait_until_ready(
            url, process, log, STARTUP_TIMEOUT_S, path=ready_path, name=" ".join(["dfguard", *args])
        )
        yield process
    finally:
        with suppress(ProcessLookupError):  # it may have exited (or failed to start) already
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
