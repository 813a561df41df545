"""Process-wide defaults that entry points apply before doing any work.

Nothing here runs at import time: the CLI, flows, service and tests call `configure_runtime()`.
"""

from __future__ import annotations

import logging
import os

# Every tool in the stack phones home unless told not to, and this machine (like many production
# hosts) has no network: a telemetry call then costs a timeout on every run.
TELEMETRY_OFF: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "BENTOML_DO_NOT_TRACK": "true",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
}


def configure_runtime(level: int = logging.INFO) -> None:
    """Turn telemetry off (without overriding a user's explicit choice) and set up logging."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
