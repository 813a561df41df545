"""`dfguard ensemble`: trained members combined, the gate fitted on validation, saved as a model folder
that loads and scores like any other."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dfguard.cli import main
from dfguard.inference.predictor import Predictor
from dfguard.models import get_model, load_detector, save_detector
from dfguard.training.data import load_faces
from dfguard.training.ensemble import build_ensemble
from dfguard.transforms import to_batch


def _untrained_member(trained_dir: Path, out: Path, seed: int = 0) -> Path:
    """A member with the trained one's architecture and contract but random weights: noise to the gate."""
    _, config = load_detector(trained_dir)
    torch.manual_seed(seed)
    fresh = get_model(config["model"]["name"], **config["model"]["kwargs"])
    extra = {key: value for key, value in config.items() if key not in ("model", "preset", "training")}
    return save_detector(fresh, out, extra)


def test_the_gate_trusts_the_trained_member_and_the_ensemble_round_trips(
    trained_detector: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    faces_dir, trained = trained_detector
    noise = _untrained_member(trained, tmp_path / "noise")
    out = tmp_path / "ensemble"
    args = ["ensemble", "--member", str(trained), "--member", str(noise), "--out", str(out)]
    assert main([*args, "--faces", str(faces_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"ensemble: {out}")

    config = json.loads((out / "config.json").read_text())
    report = config["ensemble"]
    assert report["members"] == [str(trained), str(noise)]
    trusted, ignored = report["mean_member_weight"]
    assert trusted > ignored and trusted + ignored == pytest.approx(1.0, abs=1e-3)
    assert report["val_loss_gated"] < report["val_loss_average"]
    assert config["contract_hash"] == json.loads((trained / "config.json").read_text())["contract_hash"]

    # Loaded back, it scores as the fitted gate does, through the same Predictor as every model.
    ensemble, _ = load_detector(out)
    val = load_faces(faces_dir, "val")
    crops = [cv2.imread(p) for p in val["crop_path"][:6]]
    logits = Predictor(out).score_crops(crops).logits
    with torch.no_grad():
        expected = ensemble(to_batch(crops, ensemble.preset)).logits.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_members_of_different_datasets_or_too_few_are_refused(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    faces_dir, trained = trained_detector
    with pytest.raises(ValueError, match="at least two"):
        build_ensemble([trained], faces_dir, tmp_path / "one")
    model, config = load_detector(trained)
    elsewhere = {"contract": config["contract"], "contract_hash": "0" * 16}  # another face dataset
    other = save_detector(model, tmp_path / "other", elsewhere)
    with pytest.raises(ValueError, match="one preprocessing contract"):
        build_ensemble([trained, other], faces_dir, tmp_path / "mixed")
    assert not (tmp_path / "mixed").exists()
