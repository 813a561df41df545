"""`dfguard serve`: the `bentoml serve` command for the detection service, with the settings of this
command line handed to BentoML's worker processes through the environment (`service/service.py` reads
them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dfguard.config import ServeConfig
from dfguard.servers import Server

SERVICE_IMPORT = "service:Detector"
PARAMS_ENV, OVERRIDES_ENV = "DFGUARD_PARAMS", "DFGUARD_OVERRIDES"


def service_server(cfg: ServeConfig, params_path: Path, overrides: dict[str, Any]) -> Server:
    """`bentoml serve` of the service on `cfg.host`:`cfg.port`, reading `params_path` then `overrides`."""
    bentoml = Path(sys.executable).parent / "bentoml"  # this virtualenv's, whatever PATH says
    command = [str(bentoml), "serve", SERVICE_IMPORT, "--host", cfg.host, "--port", str(cfg.port)]
    env = {PARAMS_ENV: str(params_path.resolve()), OVERRIDES_ENV: json.dumps(overrides)}
    return Server("dfguard service", command, f"http://{cfg.host}:{cfg.port}", env)
