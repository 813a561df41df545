"""The lock file readers: the dataset version a run produced, against the one committed to git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from dfguard.versioning import LOCK_FILE, committed_output_hash, output_hash


def _lock(root: Path, md5: str) -> None:
    stages = {"corpus": {"cmd": "dfguard corpus build", "outs": [{"path": "data/corpus/demo", "md5": md5}]}}
    (root / LOCK_FILE).write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}))


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def test_a_run_that_made_another_output_than_the_committed_one_is_told_apart(tmp_path: Path) -> None:
    assert committed_output_hash("data/corpus/demo", tmp_path) is None  # not a git checkout
    _git(tmp_path, "init", "-q")
    _lock(tmp_path, "aaa.dir")
    _git(tmp_path, "add", LOCK_FILE)
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "lock")
    _lock(tmp_path, "bbb.dir")  # this run rendered another corpus

    assert committed_output_hash("data/corpus/demo/", tmp_path) == "aaa.dir"
    assert output_hash("data/corpus/demo", tmp_path) == "bbb.dir"
    assert committed_output_hash("data/faces", tmp_path) is None
