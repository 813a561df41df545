"""What a registered model came from: dataset version, code version, preprocessing contract, runs.

Recorded as tags on the run and on the registered version, so the registry alone answers "which data,
which code, which crops" for any model, including one trained on another machine.
"""

from __future__ import annotations

import json
import subprocess  # nosec B404  # read-only git queries, never a shell
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfguard.config import TrainConfig
from dfguard.registry.model_files import model_file_names
from dfguard.versioning import output_hash

TAG_PREFIX = "lineage."
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Lineage:
    dataset_hash: str  # the DVC md5 of the face dataset the model was trained on
    git_commit: str
    git_dirty: bool  # uncommitted changes: the commit alone does not reproduce the code
    contract_hash: str
    contract: dict[str, Any]  # the preprocessing contract itself, so a consumer need not fetch the model
    parent_run_id: str = ""  # the pipeline's run the model's run belongs to, when any
    flow_run_id: str = ""  # the Prefect flow run that produced the model, when any

    def to_tags(self) -> dict[str, str]:
        values = {
            "dataset_hash": self.dataset_hash,
            "git_commit": self.git_commit,
            "git_dirty": str(self.git_dirty).lower(),
            "contract_hash": self.contract_hash,
            "contract": json.dumps(self.contract, sort_keys=True, separators=(",", ":")),
            "parent_run_id": self.parent_run_id,
            "flow_run_id": self.flow_run_id,
        }
        return {TAG_PREFIX + key: value for key, value in values.items() if value}


def model_contract(model_dir: str | Path) -> tuple[dict[str, Any], str]:
    """The preprocessing contract a saved model was trained with and its hash, checked against each
    other; a model without one cannot be registered (its predictor would not know how to crop)."""
    from dfguard.faces.contract import PreprocessingContract  # imports the face detector: slow

    config_name = model_file_names()[1]
    config = json.loads((Path(model_dir) / config_name).read_text())
    if "contract" not in config or "contract_hash" not in config:
        raise ValueError(f"{model_dir}: the model's {config_name} records no preprocessing contract")
    contract = PreprocessingContract.from_json(
        json.dumps({**config["contract"], "hash": config["contract_hash"]})
    )
    return contract.to_dict(), contract.hash


def git_state(root: Path = Path()) -> tuple[str, bool]:
    """The commit checked out in `root` and whether the working tree differs from it (untracked files
    count: a new module changes what runs); ("unknown", False) outside a git repository."""
    head = _git(["rev-parse", "HEAD"], root)
    if head is None:
        return UNKNOWN, False
    status = _git(["status", "--porcelain"], root) or ""
    return head, bool(status.strip())


def collect_lineage(
    model_dir: str | Path,
    faces_dir: str = TrainConfig.faces_dir,
    root: Path = Path(),
    parent_run_id: str = "",
    flow_run_id: str = "",
) -> Lineage:
    """The lineage of the model saved in `model_dir`, trained on the face dataset `faces_dir` (a path as
    `dvc.lock` records it), with the project (git checkout + `dvc.lock`) at `root`."""
    contract, contract_hash = model_contract(model_dir)
    commit, dirty = git_state(root)
    return Lineage(
        dataset_hash=output_hash(faces_dir, root) or UNKNOWN,
        git_commit=commit,
        git_dirty=dirty,
        contract_hash=contract_hash,
        contract=contract,
        parent_run_id=parent_run_id,
        flow_run_id=flow_run_id,
    )


def _git(args: list[str], root: Path) -> str | None:
    try:
        # git from PATH, as the engineer's shell finds it; `args` are this module's own constants.
        result = subprocess.run(  # nosec B603 B607  # fixed argv, no shell
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:  # no git installed
        return None
    return result.stdout.strip() if result.returncode == 0 else None
