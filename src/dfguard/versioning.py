"""Data versioning through DVC: the raw data is tracked by `data.dvc`, the stages live in `dvc.yaml`.

DVC is driven through its command line (its Python API is not a stable interface), with the current
interpreter's environment, so stage commands find this virtualenv's `dfguard`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

RAW_DATA_FILE = "data.dvc"


class DvcError(RuntimeError):
    """A DVC command failed; the message carries its output."""


def dvc(*args: str, cwd: Path = Path(), capture: bool = False) -> str:
    """Run `dvc <args>` in `cwd`, streaming its output unless `capture`; raise DvcError on failure."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "dvc", *args]
    log.info("$ dvc %s", " ".join(args))
    result = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=capture, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else "see the output above"
        raise DvcError(f"`dvc {' '.join(args)}` failed ({result.returncode}): {detail}")
    return result.stdout or ""


def track_raw_data(root: Path = Path()) -> None:
    """Record the current content of the raw data folder in `data.dvc` (a no-op when unchanged)."""
    dvc("commit", "--force", "--quiet", RAW_DATA_FILE, cwd=root)


def reproduce_and_push(root: Path = Path()) -> None:
    """Run the stages whose inputs changed, then push every tracked version to the default remote."""
    dvc("repro", cwd=root)
    dvc("push", cwd=root)
