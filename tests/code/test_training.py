"""`train_detector` on a tiny face dataset made here: outputs, warm-up, resume (with a spawned loader
worker), bad input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dfguard.config import EvaluateConfig, TrainConfig
from dfguard.evaluation.run import run_evaluate
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.crops import read_crop
from dfguard.models import load_detector
from dfguard.training.checkpoint import load_checkpoint
from dfguard.training.run import _build_model, _settings_key, train_detector
from dfguard.transforms import to_batch


@pytest.fixture
def faces_dir(tmp_path: Path, face_dataset) -> Path:
    return face_dataset(tmp_path / "faces")


def _cfg(faces_dir: Path, tmp_path: Path, **overrides) -> TrainConfig:
    settings = {
        "faces_dir": str(faces_dir),
        "manifest_path": "",
        "out_dir": str(tmp_path / "model"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "model": "small_cnn",
        "input_size": 32,
        "epochs": 2,
        "frozen_epochs": 1,
        "batch_size": 8,
        "samples_per_epoch": 32,
        "patience": 5,
    }
    return TrainConfig(**{**settings, **overrides})


def test_training_writes_a_loadable_model_with_its_contract(faces_dir: Path, tmp_path: Path) -> None:
    result = train_detector(_cfg(faces_dir, tmp_path), progress=False)
    _, config = load_detector(result.model_dir)
    contract = PreprocessingContract.from_json((faces_dir / "contract.json").read_text())
    assert config["contract_hash"] == contract.hash and config["contract"] == contract.to_dict()
    assert config["preset"]["input_size"] == 32
    training = config["training"]
    assert training["epochs_run"] == 2 and training["best_epoch"] == result.best_epoch
    assert training["val_video_auc"] == result.val_video_auc and training["config"]["model"] == "small_cnn"
    assert len(training["dataset_fingerprint"]) == 16 and training["seconds"] > 0
    assert config["aggregation"] == {"frames": "mean"}
    assert json.loads((result.model_dir / "resolved_config.json").read_text())["input_size"] == 32
    history = json.loads((result.model_dir / "history.json").read_text())
    assert [h["frozen"] for h in history] == [True, False]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert (result.model_dir / "training_curves.png").stat().st_size > 1000


def _snapshots(model_states: list[dict[str, torch.Tensor]]):
    def hook(record: dict, model) -> None:
        model_states.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    return hook


def test_frozen_warm_up_leaves_the_backbone_then_fine_tuning_changes_it(
    faces_dir: Path, tmp_path: Path
) -> None:
    from dfguard.models import get_model

    torch.manual_seed(TrainConfig.seed)  # train_detector seeds the same way: the same initial weights
    initial = get_model("small_cnn", input_size=32).state_dict()
    states: list[dict[str, torch.Tensor]] = []
    train_detector(
        _cfg(faces_dir, tmp_path, epochs=2, frozen_epochs=1), progress=False, on_epoch_end=_snapshots(states)
    )
    backbone = [k for k in initial if k.startswith("backbone.")]
    assert all(torch.equal(states[0][k], initial[k]) for k in backbone), "warm-up moved the backbone"
    assert not all(torch.equal(states[0][k], initial[k]) for k in initial if k.startswith("head."))
    assert not all(
        torch.equal(states[1][k], states[0][k]) for k in backbone if initial[k].is_floating_point()
    )


def _people_manifest(faces_dir: Path, path: Path) -> str:
    """A manifest naming a different person in each real video of the tiny dataset."""
    videos = pd.read_parquet(faces_dir / "faces.parquet").drop_duplicates("video_id")["video_id"]
    pd.DataFrame({"video_id": videos, "target_identity": [f"person-{v}" for v in videos]}).to_parquet(path)
    return str(path)


@pytest.mark.parametrize("settings", ["plain", "ema", "identity adversary"])
def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(
    faces_dir: Path, tmp_path: Path, settings: str
) -> None:
    changes = {
        "plain": {},
        "ema": {"ema_decay": 0.9},
        "identity adversary": {
            "identity_weight": 0.5,
            "manifest_path": _people_manifest(faces_dir, tmp_path / "manifest.parquet"),
        },
    }[settings]
    straight = train_detector(_cfg(faces_dir, tmp_path / "a", epochs=3, **changes), progress=False)

    def interrupt_after_epoch_2(record: dict, model) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # as if the machine went away after the checkpoint was written

    cfg = _cfg(faces_dir, tmp_path / "b", epochs=3, **changes)
    with pytest.raises(KeyboardInterrupt):
        train_detector(cfg, progress=False, on_epoch_end=interrupt_after_epoch_2)
    epochs_seen: list[int] = []
    # The resumed run loads its data in a spawned worker process: samples must not depend on where
    # they are made, so the weights still match bit for bit.
    resumed = train_detector(
        dataclasses.replace(cfg, resume=True, workers=1),
        progress=False,
        on_epoch_end=lambda record, model: epochs_seen.append(record["epoch"]),
    )
    assert epochs_seen == [3], "the resumed run redid finished epochs"
    a, _ = load_detector(straight.model_dir)
    b, _ = load_detector(resumed.model_dir)
    for (key, left), right in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(left, right), key
    history_a = json.loads((straight.model_dir / "history.json").read_text())
    history_b = json.loads((resumed.model_dir / "history.json").read_text())
    assert [h["val_loss"] for h in history_a] == [h["val_loss"] for h in history_b]
    # The adversary's loss is recorded when there is one (two named people: chance is log 2).
    assert [h.get("identity_loss") for h in history_a] == [h.get("identity_loss") for h in history_b]
    assert all(("identity_loss" in h) == ("identity_weight" in changes) for h in history_a)


def test_training_validates_and_saves_the_average_of_the_weights(faces_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(faces_dir, tmp_path, ema_decay=0.9)
    judged: list[dict[str, torch.Tensor]] = []
    result = train_detector(cfg, progress=False, on_epoch_end=_snapshots(judged))
    saved = load_checkpoint(Path(cfg.checkpoint_dir) / _settings_key(cfg))
    assert saved is not None and saved["ema"]["updates"] == 2 * 32 // 8
    # What the epoch hook (validation) saw is the average, not the live weights the optimiser moved.
    for key, value in judged[-1].items():
        assert torch.equal(value, saved["ema"]["model"][key]), key
    weights = [k for k, v in judged[-1].items() if v.is_floating_point() and k.endswith("weight")]
    assert any(not torch.equal(judged[-1][k], saved["model"][k]) for k in weights)
    model, _ = load_detector(result.model_dir)
    best = judged[result.best_epoch - 1]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frozen_epochs": 2, "epochs": 2}, "frozen_epochs"),
        ({"sbi_share": 1.5}, "sbi_share"),
        ({"sbi_background_share": -0.1}, "sbi_background_share"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"loss": "hinge"}, "loss"),
        ({"batch_size": 7}, "even"),
        ({"model": "ensemble"}, "frame detectors and clip models"),
        ({"model": "temporal", "frame_model": "small_cnn", "clip_length": 5}, "even number of draws"),
        ({"clip_length": 0}, "clip_length"),
        ({"identity_weight": -0.5}, "identity_weight"),
        ({"identity_weight": 0.5}, "name at least 2 people"),  # no manifest names anyone
    ],
)
def test_bad_settings_are_refused(faces_dir: Path, tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        train_detector(_cfg(faces_dir, tmp_path, **change), progress=False)


def test_missing_dataset_and_one_class_validation_are_clear_errors(faces_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dfguard extract"):
        train_detector(_cfg(tmp_path / "nowhere", tmp_path), progress=False)
    faces = pd.read_parquet(faces_dir / "faces.parquet")
    faces.loc[faces.split == "val", "label"] = "real"
    faces.to_parquet(faces_dir / "faces.parquet", index=False)
    with pytest.raises(ValueError, match="validation split"):
        train_detector(_cfg(faces_dir, tmp_path), progress=False)


def test_a_clip_model_trains_on_clips_and_evaluates_as_validated(faces_dir: Path, tmp_path: Path) -> None:
    settings = {"model": "temporal", "frame_model": "small_cnn", "clip_length": 2, "pooling": "attention"}
    cfg = _cfg(faces_dir, tmp_path, **settings)
    result = train_detector(cfg, progress=False)
    model, config = load_detector(result.model_dir)
    assert model.clip_model and config["aggregation"] == {"frames": "clip"}
    kwargs = config["model"]["kwargs"]
    assert kwargs["pooling"] == "attention" and kwargs["frame_model"]["name"] == "small_cnn"
    assert config["preset"]["input_size"] == 32

    # Evaluation scores each video as one clip of its faces, which is what training selected on.
    evaluated = run_evaluate(
        EvaluateConfig(
            model_dir=str(result.model_dir),
            faces_dir=str(faces_dir),
            manifest_path="",
            split="val",
            out_dir=str(tmp_path / "eval"),
        ),
        progress=False,
    )
    assert evaluated.metrics["video_uncalibrated"]["auc"] == pytest.approx(result.val_video_auc, abs=1e-4)
    videos = pd.read_parquet(tmp_path / "eval" / "videos.parquet").set_index("video_id")
    faces = pd.read_parquet(faces_dir / "faces.parquet")
    clip = faces[faces["video_id"] == "val1"].sort_values("frame")
    crops = [read_crop(faces_dir / crop) for crop in clip["crop"]]
    with torch.no_grad():
        direct = model.eval()(to_batch(crops, model.preset).unsqueeze(0)).logits.item()
    assert videos.loc["val1", "logit"] == pytest.approx(direct, abs=1e-5)
    with pytest.raises(ValueError, match="clip model"):
        run_evaluate(
            EvaluateConfig(model_dir=str(result.model_dir), faces_dir=str(faces_dir), aggregation="max"),
            progress=False,
        )


def test_training_refuses_to_start_from_an_unrelated_model(faces_dir: Path, tmp_path: Path) -> None:
    first = train_detector(_cfg(faces_dir, tmp_path / "first"), progress=False)
    with pytest.raises(ValueError, match="can start the same model"):
        train_detector(
            _cfg(faces_dir, tmp_path, input_size=48, init_from=str(first.model_dir)), progress=False
        )


def test_training_builds_the_patch_model_at_the_configured_stage() -> None:
    for stage, channels in ((3, 40), (4, 80)):
        model = _build_model(TrainConfig(model="patch", patch_stage=stage, input_size=64))
        assert model.config["kwargs"]["stage"] == stage
        assert model.feature_dim == channels
        assert model.preset.input_size == 64
