"""Data versioning through DVC: the raw data is tracked by `data.dvc`, the stages live in `dvc.yaml`.

DVC is driven through its command line (its Python API is not a stable interface), with the current
interpreter's environment, so stage commands find this virtualenv's `dfguard`.
"""

from __future__ import annotations

import logging
import os
import subprocess  # nosec B404  # runs dvc and git with argv lists, never a shell
import sys
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

RAW_DATA_FILE = "data.dvc"
LOCK_FILE = "dvc.lock"


class DvcError(RuntimeError):
    """A DVC command failed; the message carries its output."""


def dvc(*args: str, cwd: Path = Path(), capture: bool = False) -> str:
    """Run `dvc <args>` in `cwd`, streaming its output unless `capture`; raise DvcError on failure."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cmd = [sys.executable, "-m", "dvc", *args]
    log.info("$ dvc %s", " ".join(args))
    # This interpreter's dvc module; `args` come from this package's callers, not from requests.
    result = subprocess.run(  # nosec B603  # argv list, no shell
        cmd, cwd=cwd, env=env, text=True, capture_output=capture, check=False
    )
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip() if capture else "see the output above"
        raise DvcError(f"`dvc {' '.join(args)}` failed ({result.returncode}): {detail}")
    return result.stdout or ""


def track_raw_data(root: Path = Path()) -> None:
    """Record the current content of the raw data folder in `data.dvc` (a no-op when unchanged)."""
    dvc("commit", "--force", "--quiet", RAW_DATA_FILE, cwd=root)


def reproduce(*stages: str, root: Path = Path()) -> None:
    """Run the named stages (all when none) and the upstream stages whose inputs changed."""
    dvc("repro", *stages, cwd=root)


def commit_stage(stage: str, root: Path = Path()) -> None:
    """Record in dvc.lock the outputs a stage's work produced outside `dvc repro` (a flow's fan-out)."""
    dvc("commit", "--force", "--quiet", stage, cwd=root)


def push(root: Path = Path()) -> None:
    """Push every version the lock file and data.dvc name to the default remote."""
    dvc("push", cwd=root)


def output_hash(path: str, root: Path = Path()) -> str | None:
    """The md5 dvc.lock records for a stage output (a dataset version), or None when it records none."""
    lock_path = root / LOCK_FILE
    if not lock_path.is_file():
        return None
    return _lock_output(lock_path.read_text(), path)


def committed_output_hash(path: str, root: Path = Path()) -> str | None:
    """The md5 the committed dvc.lock (git's HEAD) records for a stage output; None outside a git
    checkout or when it records none. Beside `output_hash`, it tells whether this checkout's run
    reproduced the committed output or made another."""
    # git from PATH, as the engineer's shell finds it.
    shown = subprocess.run(  # nosec B603 B607  # fixed argv, no shell
        ["git", "show", f"HEAD:{LOCK_FILE}"], cwd=root, text=True, capture_output=True, check=False
    )
    return _lock_output(shown.stdout, path) if shown.returncode == 0 else None


def _lock_output(lock_text: str, path: str) -> str | None:
    wanted = Path(path).as_posix().rstrip("/")
    for stage in (yaml.safe_load(lock_text) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if Path(out["path"]).as_posix().rstrip("/") == wanted:
                return out.get("md5")
    return None
