"""What a saved model folder holds (`dfguard.models.io`), checked before it is logged or handed out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# Config sections that record how a model came about (wall time, epochs run, paths), not how it
# scores: a retrain that reproduces the same weights must not count as a new model because of them.
PROVENANCE_SECTIONS = ("training",)


def model_file_names() -> tuple[str, str]:
    """The weights and config file names of a saved model folder."""
    # Imported here: `dfguard.models` loads torch and timm (about 4 s), which listing versions never needs.
    from dfguard.models.io import CONFIG_NAME, WEIGHTS_NAME

    return WEIGHTS_NAME, CONFIG_NAME


def require_saved_model(folder: Path) -> Path:
    """`folder`, if it holds a saved model's weights and config; raises FileNotFoundError otherwise."""
    missing = [name for name in model_file_names() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a saved model: {', '.join(missing)} missing")
    return folder


def model_digest(folder: Path) -> str:
    """SHA-256 of what decides a saved model's outputs: its weights and its config (preprocessing,
    calibration, aggregation), minus the provenance sections. Equal digests serve identically."""
    weights_name, config_name = model_file_names()
    require_saved_model(folder)
    config = json.loads((folder / config_name).read_text())
    behaviour = {key: value for key, value in config.items() if key not in PROVENANCE_SECTIONS}
    sha = hashlib.sha256()
    with (folder / weights_name).open("rb") as weights:
        sha.update(hashlib.file_digest(weights, "sha256").digest())
    sha.update(json.dumps(behaviour, sort_keys=True).encode())
    return sha.hexdigest()
