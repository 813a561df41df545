"""Process-wide defaults that entry points apply before doing any work.

Nothing here runs at import time: the CLI, flows, service and tests call `configure_runtime()`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
    # Not telemetry, but console noise: MLflow draws a progress bar for every artifact download.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


# Prefect keeps its temporary server's database under PREFECT_HOME: inside the project, not the user's
# home, and given time to start on a loaded 2-core machine (13-22 s cold).
PREFECT_DEFAULTS: dict[str, str] = {
    "PREFECT_HOME": ".prefect",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}

# OpenCV's FFmpeg prints its own lines to the terminal ("[matroska,webm @ 0x...] File ended
# prematurely") in the middle of a command's output; a file it cannot read already fails with a
# MediaError that names the reason. Read when the first video is opened, and inherited by workers.
MEDIA_DEFAULTS: dict[str, str] = {"OPENCV_FFMPEG_LOGLEVEL": "-8"}  # FFmpeg's AV_LOG_QUIET


def configure_runtime(level: int = logging.INFO) -> None:
    """Turn telemetry off, point Prefect at the project and keep FFmpeg's own lines off the terminal
    (without overriding a user's explicit choice), and set up logging."""
    for key, value in {**TELEMETRY_OFF, **MEDIA_DEFAULTS}.items():
        os.environ.setdefault(key, value)
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, str(Path(value).resolve()) if key == "PREFECT_HOME" else value)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Prefect's client logs every HTTP request to its API at INFO: noise that buries the work's progress.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))


_threads_lock = threading.Lock()
_threads_users = 0
_threads_before = 0


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with `n` intra-op threads inside the block, then restore the process's count.

    Why: on a busy machine idle threads spin-wait (MTCNN took 6.8 s instead of 0.27 s for 16 frames on
    2 cores), and a convolution's float sums depend on how its work is split, so MTCNN's boxes, and the
    crops made from them, differ in the last digits between 1 and 2 threads. Work that must give the
    same result in a worker process and in the main one runs under the same count. The count is
    process-wide: concurrent blocks (threads of one process) share it, and the last one out restores it.
    """
    import torch

    global _threads_users, _threads_before
    with _threads_lock:
        if _threads_users == 0:
            _threads_before = torch.get_num_threads()
        _threads_users += 1
        torch.set_num_threads(n)
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                torch.set_num_threads(_threads_before)


def default_device(requested: str = "") -> str:
    """The torch device to run on: `requested` when given, else CUDA when present, else the CPU."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
