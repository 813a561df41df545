"""`dfguard serve`: the `bentoml serve` command for the detection service, with the settings of this
command line handed to BentoML's worker processes through the environment (`service/service.py` reads
them)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from dfguard.config import ServeConfig, settings_env
from dfguard.servers import Server

SERVICE_IMPORT = "service:Detector"


def service_server(cfg: ServeConfig, params_path: Path, overrides: dict[str, Any]) -> Server:
    """`bentoml serve` of the service on `cfg.host`:`cfg.port`, reading `params_path` then `overrides`."""
    bentoml = Path(sys.executable).parent / "bentoml"  # this virtualenv's, whatever PATH says
    command = [str(bentoml), "serve", SERVICE_IMPORT, "--host", cfg.host, "--port", str(cfg.port)]
    return Server(
        "dfguard service", command, f"http://{cfg.host}:{cfg.port}", settings_env(params_path, overrides)
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it), for a service started next."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until_ready(
    url: str,
    process: subprocess.Popen,
    log: Path,
    timeout_s: float,
    path: str = "/readyz",
    name: str = "dfguard serve",
) -> None:
    """Poll `url` + `path` until the server started as `process` answers 200 (the service's /readyz;
    Streamlit's is /_stcore/health); RuntimeError with the end of its `log` if it exits first or is not
    ready within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{name} not ready in {timeout_s:.0f} s:\n{log.read_text()[-4000:]}")
