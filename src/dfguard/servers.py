"""`dfguard server start`: the MLflow tracking server (runs, registry, UI) and the Prefect server, side by
side on one host, stopped together.

Each server runs in its own process group: both spawn workers (uvicorn), and stopping a group stops
them all, where signalling only the launcher could leave a worker holding the port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from dfguard.config import RegistryConfig
from dfguard.registry.store import ARTIFACTS_DIR, embedded_uri

STOP_TIMEOUT_S = 15.0
POLL_S = 0.5


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    url: str
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment


def project_servers(cfg: RegistryConfig, host: str, mlflow_port: int, prefect_port: int) -> list[Server]:
    """The MLflow server on the embedded store under `cfg.root`, and the Prefect server (whose database
    lives under PREFECT_HOME)."""
    if cfg.tracking_uri:
        raise ValueError(
            f"registry.tracking_uri is {cfg.tracking_uri}: the team's MLflow server already runs"
        )
    bin_dir = Path(sys.executable).parent  # this virtualenv's tools, whatever PATH says
    artifacts = Path(cfg.root) / ARTIFACTS_DIR
    artifacts.mkdir(parents=True, exist_ok=True)
    mlflow = [
        str(bin_dir / "mlflow"), "server",
        "--backend-store-uri", embedded_uri(cfg.root),
        # Where runs logged through this server (tracking URI http://...) keep their files: the same
        # folder the embedded store uses, so both ways of logging end up side by side.
        "--artifacts-destination", str(artifacts.resolve()),
        "--host", host, "--port", str(mlflow_port),
        "--workers", "1",  # MLflow's default of 4 uvicorn workers suits a shared server, not one engineer
    ]  # fmt: skip
    # MLflow's GenAI job runner (seven task consumers) serves nothing dfguard uses.
    mlflow_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    prefect = [str(bin_dir / "prefect"), "server", "start", "--host", host, "--port", str(prefect_port)]
    return [
        Server("MLflow", mlflow, f"http://{host}:{mlflow_port}", mlflow_env),
        Server("Prefect", prefect, f"http://{host}:{prefect_port}"),
    ]


def run_servers(servers: list[Server]) -> int:
    """Start every server, print their URLs, and wait: Ctrl-C (or SIGTERM) stops them all (exit code 0);
    a server that exits on its own stops the others too (its exit code, or 1)."""
    processes = [
        (server, subprocess.Popen(server.command, env={**os.environ, **server.env}, start_new_session=True))
        for server in servers
    ]
    for server in servers:
        print(f"{server.name}: {server.url}", flush=True)
    print("Ctrl-C stops them.", flush=True)
    try:
        with _interrupted_by_sigterm():
            while True:
                for server, process in processes:
                    code = process.poll()
                    if code is not None:
                        print(f"{server.name} exited with code {code}; stopping the others", file=sys.stderr)
                        return code or 1
                time.sleep(POLL_S)
    except KeyboardInterrupt:
        return 0
    finally:
        for _, process in processes:
            _stop(process)


@contextmanager
def _interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM (`kill`, a process manager) ends the wait as Ctrl-C does, so the servers are stopped
    either way; SIGINT is set too, because a shell starts background jobs with it ignored."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process's group and give the launcher STOP_TIMEOUT_S to exit, then SIGKILL whatever of
    the group is left (a worker the launcher did not take down, or everything if it hung)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            return
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
