"""Save and load detectors as `model.safetensors` + `config.json`: nothing is ever unpickled.

`config.json` holds the model's registry name and resolved settings (`model`), its input preset
(`preset`) and whatever the caller adds (`extra_config`: the preprocessing contract, calibration,
lineage), so the folder alone is enough to rebuild the model and feed it correctly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dfguard.models.base import Detector
from dfguard.models.registry import get_model
from dfguard.models.weights import initial_weights_skipped

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
RESERVED_KEYS = ("model", "preset")


def save_detector(model: Detector, out_dir: str | Path, extra_config: dict[str, Any] | None = None) -> Path:
    """Write the detector's weights and config under `out_dir`; returns the folder."""
    extra = extra_config or {}
    clash = [k for k in RESERVED_KEYS if k in extra]
    if clash:
        raise ValueError(f"extra_config may not set {clash}: they describe the model itself")
    if not model.config:
        raise ValueError("the model has no recorded config: build it with get_model()")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # safetensors stores dense row-major tensors: channels_last weights are copied to that layout.
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # One metadata entry only: safetensors writes the metadata map in a random order, so with two the
    # same weights gave different files (and different DVC and registry digests) from run to run. The
    # model's name is in config.json.
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    config = {"model": model.config, "preset": model.preset.to_dict(), **extra}
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def load_detector(model_dir: str | Path) -> tuple[Detector, dict[str, Any]]:
    """Rebuild a saved detector in eval mode; returns it and its full config.

    Raises FileNotFoundError for a missing file and ValueError, naming the file, for a damaged one:
    a folder copied half-way or edited by hand must say which file is wrong, not show a parser's trace.
    """
    folder = Path(model_dir)
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"{folder} is not a model folder: it has no {path.name}")
    try:
        config = json.loads(config_path.read_text())
        name, kwargs = config["model"]["name"], config["model"]["kwargs"]
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path} is not valid JSON ({err})") from err
    except (KeyError, TypeError) as err:
        raise ValueError(f"{config_path} does not name a model (model.name and model.kwargs)") from err
    with initial_weights_skipped():
        model = get_model(name, **kwargs)
    try:
        weights = load_file(str(weights_path))
    except SafetensorError as err:
        raise ValueError(f"{weights_path} is not a readable safetensors file ({err})") from err
    expected = model.state_dict().keys()
    missing, unexpected = expected - weights.keys(), weights.keys() - expected
    if missing or unexpected:
        raise ValueError(
            f"{weights_path} does not hold the weights of the {name} its {CONFIG_NAME} describes: "
            f"{len(missing)} tensors missing, {len(unexpected)} unexpected"
        )
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:  # same names, other shapes: the first line names the tensor
        raise ValueError(
            f"{weights_path} does not fit the {name} its {CONFIG_NAME} describes: {err}"
        ) from err
    return model.eval(), config


def start_from(model: Detector, model_dir: str | Path) -> None:
    """Copy a saved detector's weights into `model` before training: all of them when it is the same
    model with the same settings (fine-tuning), or its backbone when `model` is a clip model over that
    frame model (two-stage training: the frame model has learnt the faces, the clip model learns time).
    Raises ValueError when the saved model is neither."""
    source, _ = load_detector(model_dir)
    # Compared as JSON has them: a saved config reads its tuples back as lists.
    saved = json.loads(json.dumps(source.config))
    if saved == json.loads(json.dumps(model.config)):
        model.load_state_dict(source.state_dict())
    elif model.clip_model and saved == json.loads(json.dumps(model.nested_configs().get("frame_model"))):
        model.backbone.load_state_dict(source.backbone.state_dict())
    else:
        raise ValueError(
            f"{model_dir} holds {source.config['name']} with other settings: it can start the same model, "
            f"or a clip model over it, not {model.config['name']}"
        )
