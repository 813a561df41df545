"""Servers started side by side on one host and stopped together: `dfguard server start` (the MLflow
tracking server and the Prefect server) and `dfguard up` (those, the flows' deployments, the service
and the dashboard).

Each server runs in its own process group: they spawn workers (uvicorn), and stopping a group stops
them all, where signalling only the launcher could leave a worker holding the port. A server with a
health path is waited for before the next one starts, so one that needs another (the deployments need
the Prefect server) finds it up.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess  # nosec B404  # starts the platform's own servers, never a shell
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from dfguard.config import RegistryConfig
from dfguard.registry.store import ARTIFACTS_DIR, embedded_uri

STOP_TIMEOUT_S = 15.0
POLL_S = 0.5
_BIN = Path(sys.executable).parent  # this virtualenv's tools, whatever PATH says
READY_TIMEOUT_S = 180.0  # Prefect's server takes 15-25 s on 2 busy cores, bentoml about 10


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    url: str
    env: dict[str, str] = field(default_factory=dict)  # added to this process's environment
    health_path: str = ""  # answers 200 once the server is ready; "" = ready when started


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it), for a server started next."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until_ready(
    url: str,
    process: subprocess.Popen,
    log: Path | None,
    timeout_s: float,
    path: str = "/readyz",
    name: str = "dfguard serve",
) -> None:
    """Poll `url` + `path` until the server started as `process` answers 200 (the service's /readyz;
    Streamlit's is /_stcore/health); RuntimeError with the end of its `log` if it exits first or is not
    ready within `timeout_s`."""
    deadline = time.monotonic() + timeout_s

    def tail() -> str:
        return f":\n{log.read_text()[-4000:]}" if log is not None and log.is_file() else ""

    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}{tail()}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"{name} not ready in {timeout_s:.0f} s{tail()}")


class AlreadyRunningError(RuntimeError):
    """Another process holds the lock of what this one was to start."""


@contextmanager
def single_instance(lock_path: Path, what: str, since: str = "") -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` for the block; AlreadyRunningError, naming the holder's
    process id (and `since`, when it gave one), when another process holds it. The kernel drops the
    lock when its holder dies, so a killed run leaves nothing stale behind."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise AlreadyRunningError(
                f"{what} is already running (process {holder}; lock {lock_path})"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} since {since}" if since else str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


def mlflow_server(cfg: RegistryConfig, host: str, port: int) -> Server:
    """The MLflow server (UI, tracking, registry) on the embedded store under `cfg.root`."""
    if cfg.tracking_uri:
        raise ValueError(
            f"registry.tracking_uri is {cfg.tracking_uri}: the team's MLflow server already runs"
        )
    artifacts = Path(cfg.root) / ARTIFACTS_DIR
    artifacts.mkdir(parents=True, exist_ok=True)
    mlflow = [
        str(_BIN / "mlflow"), "server",
        "--backend-store-uri", embedded_uri(cfg.root),
        # Where runs logged through this server (tracking URI http://...) keep their files: the same
        # folder the embedded store uses, so both ways of logging end up side by side.
        "--artifacts-destination", str(artifacts.resolve()),
        "--host", host, "--port", str(port),
        "--workers", "1",  # MLflow's default of 4 uvicorn workers suits a shared server, not one engineer
    ]  # fmt: skip
    # MLflow's GenAI job runner (seven task consumers) serves nothing dfguard uses.
    return Server(
        "MLflow", mlflow, f"http://{host}:{port}", {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, "/health"
    )


def prefect_server(host: str, port: int) -> Server:
    """The Prefect server (its database lives under PREFECT_HOME)."""
    command = [str(_BIN / "prefect"), "server", "start", "--host", host, "--port", str(port)]
    return Server("Prefect", command, f"http://{host}:{port}", health_path="/api/health")


def project_servers(cfg: RegistryConfig, host: str, mlflow_port: int, prefect_port: int) -> list[Server]:
    """`dfguard server start`: the MLflow server on the embedded store and the Prefect server."""
    return [mlflow_server(cfg, host, mlflow_port), prefect_server(host, prefect_port)]


def run_servers(servers: list[Server], ready_timeout_s: float = READY_TIMEOUT_S) -> int:
    """Start every server in order (each with a health path waited for before the next starts), print
    their URLs, and wait: Ctrl-C (or SIGTERM) stops them all (exit code 0); a server that exits on its
    own, or does not get ready, stops the others too (its exit code, or 1)."""
    processes: list[tuple[Server, subprocess.Popen]] = []
    try:
        with _interrupted_by_sigterm():
            for server in servers:
                # Each Server's argv is built in this package from this virtualenv's executables.
                process = subprocess.Popen(  # nosec B603  # our own argv, no shell
                    server.command, env={**os.environ, **server.env}, start_new_session=True
                )
                processes.append((server, process))
                if server.health_path:
                    try:
                        wait_until_ready(
                            server.url, process, None, ready_timeout_s, server.health_path, server.name
                        )
                    except RuntimeError as err:
                        print(f"{err}; stopping the others", file=sys.stderr)
                        return process.poll() or 1
            for server in servers:
                print(f"{server.name}: {server.url}", flush=True)
            print("Ctrl-C stops them.", flush=True)
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
        for _, process in reversed(processes):
            stop_process(process)


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


def stop_process(process: subprocess.Popen) -> None:
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
