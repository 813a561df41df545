"""What a saved model folder holds (`dfguard.models.io`), checked before it is logged or handed out."""

from __future__ import annotations

from pathlib import Path


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
