"""`dfguard dashboard`: the `streamlit run` command for the reviewer app, headless and without
telemetry, with this command line's settings handed to the app through the environment."""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from dfguard.config import DashboardConfig, settings_env
from dfguard.servers import Server

APP_PACKAGE = "dashboard"  # the top-level package beside `dfguard`; its app.py is the Streamlit script


def dashboard_app() -> Path:
    """The Streamlit script, found as an installed package (so any working directory will do)."""
    spec = find_spec(APP_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {APP_PACKAGE!r} package is not installed beside dfguard (run make install)")
    return Path(next(iter(spec.submodule_search_locations))) / "app.py"


def dashboard_command(cfg: DashboardConfig) -> list[str]:
    streamlit = Path(sys.executable).parent / "streamlit"  # this virtualenv's, whatever PATH says
    return [
        str(streamlit),
        "run",
        str(dashboard_app()),
        "--server.address",
        cfg.host,
        "--server.port",
        str(cfg.port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # Uploads are checked by the service, which refuses what is too large; Streamlit's own cap
        # (MB) only keeps a browser from streaming gigabytes into the dashboard first.
        "--server.maxUploadSize",
        "300",
        "--server.fileWatcherType",
        "none",
    ]


def dashboard_server(cfg: DashboardConfig, params_path: Path, overrides: dict[str, Any]) -> Server:
    return Server(
        "dfguard dashboard",
        dashboard_command(cfg),
        f"http://{cfg.host}:{cfg.port}",
        settings_env(params_path, overrides),
        "/_stcore/health",
    )
