"""`dfguard serve`: the `bentoml serve` command for the detection service, with the settings of this
command line handed to BentoML's worker processes through the environment (`service/service.py` reads
them)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dfguard.config import ServeConfig, settings_env
from dfguard.servers import Server, free_port, wait_until_ready

__all__ = ["SERVICE_IMPORT", "free_port", "service_server", "wait_until_ready"]

SERVICE_IMPORT = "service:Detector"


def service_server(cfg: ServeConfig, params_path: Path, overrides: dict[str, Any]) -> Server:
    """`bentoml serve` of the service on `cfg.host`:`cfg.port`, reading `params_path` then `overrides`."""
    bentoml = Path(sys.executable).parent / "bentoml"  # this virtualenv's, whatever PATH says
    command = [str(bentoml), "serve", SERVICE_IMPORT, "--host", cfg.host, "--port", str(cfg.port)]
    return Server(
        "dfguard service",
        command,
        f"http://{cfg.host}:{cfg.port}",
        settings_env(params_path, overrides),
        "/livez",  # up, with or without a champion to serve (/readyz says which)
    )
