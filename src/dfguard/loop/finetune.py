"""What a loop run trains and calibrates on, and how: a low-learning-rate fine-tune of the champion on
its original training faces replayed beside the reviewers' feedback faces, then a re-calibration on
validation plus feedback.

Replay is what keeps the gain without the forgetting: a refit on a few dozen new items alone pulls the
weights towards them and away from everything else. Each epoch draws `replay_share` of its faces from
the original train split and the rest from feedback-train, per class (the feedback rows are repeated
to reach their share; training's pairs keep reals and fakes balanced). Model selection stays on the
original validation split, so an epoch that forgets is not the one kept.

The rates: the head at `loop.lr` (1e-4), the backbone at that times `train.backbone_lr_scale` (3e-5
by default): 10-30x below the first training, so the pretrained-then-trained backbone moves little;
the head, a single linear layer over features that already separate, may move more to take in a new
kind of fake. A head on a frozen backbone (`clip_frozen`) has nothing below it to disturb: it takes
`loop.head_lr` (3e-4, a third of its first training's) for `loop.head_epochs` passes over the cached
features, which cost seconds. Gradients are clipped (`loop.grad_clip`) because one batch of an odd
new kind must not throw the weights far.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfguard.calibration.stage import CalibrateResult, run_calibrate
from dfguard.config import CalibrateConfig, LoopConfig, TrainConfig
from dfguard.faces.table import CONTRACT_NAME, FACES_NAME, read_contract, read_faces
from dfguard.loop.dataset import TRAIN
from dfguard.models import model_class
from dfguard.models.io import CONFIG_NAME

REPLAY_DIR, CALIBRATION_DIR = "replay", "calibration"


def _absolute(faces: pd.DataFrame, faces_dir: str | Path) -> pd.DataFrame:
    """Crop paths made absolute, so one table can name crops of two datasets."""
    root = Path(faces_dir).resolve()
    return faces.assign(crop=[str(root / crop) for crop in faces["crop"]])


def _mixed(original: pd.DataFrame, feedback: pd.DataFrame, replay_share: float, seed: int) -> pd.DataFrame:
    """Per class, the original rows plus the feedback rows repeated until they make up
    1 - `replay_share` of the class; a class without feedback keeps its original rows only."""
    rng = np.random.default_rng(seed)
    parts = []
    for label in ("real", "fake"):
        old, new = original[original["label"] == label], feedback[feedback["label"] == label]
        if new.empty:
            parts.append(old)
            continue
        if replay_share <= 0.0:
            parts.append(new)
            continue
        wanted = round(len(old) * (1.0 - replay_share) / replay_share)
        repeats = rng.choice(len(new), max(wanted, len(new)), replace=wanted > len(new))
        parts += [old, new.iloc[repeats]]
    return pd.concat(parts, ignore_index=True)


def build_loop_datasets(
    faces_dir: str | Path,
    feedback_dir: str | Path,
    out_dir: str | Path,
    replay_share: float,
    seed: int = 0,
    media_kind: str | None = None,
) -> tuple[Path, Path]:
    """Two face datasets under `out_dir`: `replay/` (train: the replay mix; val: the original
    validation split) to fine-tune on, and `calibration/` (val: the original validation split plus
    feedback-train, only its items of `media_kind` when given) to calibrate on. Both keep the original
    contract, which the feedback's must equal: crops made another way would teach the model the
    difference."""
    if not 0.0 <= replay_share <= 1.0:
        raise ValueError(f"loop.replay_share must lie in [0, 1], got {replay_share}")
    contract, feedback_contract = read_contract(faces_dir), read_contract(feedback_dir)
    if contract.hash != feedback_contract.hash:
        raise ValueError(
            f"the feedback dataset's crops were made with contract {feedback_contract.hash}, the training "
            f"faces with {contract.hash}: a fine-tune needs both cropped alike"
        )
    original = _absolute(read_faces(faces_dir, subject_only=True), faces_dir)
    feedback = _absolute(read_faces(feedback_dir), feedback_dir)
    feedback_train = feedback[feedback["split"] == TRAIN]
    if media_kind is not None:
        feedback_train = feedback_train[feedback_train["media_kind"] == media_kind]
    if feedback_train.empty:
        raise ValueError(f"{feedback_dir} has no feedback-train items: nothing new to learn from")
    val = original[original["split"] == "val"]
    replay = pd.concat(
        [_mixed(original[original["split"] == "train"], feedback_train, replay_share, seed), val],
        ignore_index=True,
    )
    calibration = pd.concat([val, feedback_train.assign(split="val")], ignore_index=True)
    made = []
    for name, table in ((REPLAY_DIR, replay), (CALIBRATION_DIR, calibration)):
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        table.drop(columns="target").to_parquet(folder / FACES_NAME, index=False)
        (folder / CONTRACT_NAME).write_text(contract.to_json())
        made.append(folder)
    return made[0], made[1]


def fine_tune_config(
    champion_dir: str | Path, replay_dir: Path, out_dir: Path, policy: LoopConfig
) -> TrainConfig:
    """The champion's own training settings (model, input size, augmentation, self-blends), started
    from its weights, at the loop's low rate, for the loop's few epochs, with no head-only warm-up (the
    head is trained already) and no checkpoint resume (each loop run starts from the champion)."""
    config = json.loads((Path(champion_dir) / CONFIG_NAME).read_text())
    saved: dict[str, Any] = config.get("training", {}).get("config", {})
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    base = TrainConfig(**{key: value for key, value in saved.items() if key in known})
    on_features = {"lr": policy.head_lr, "head_epochs": policy.head_epochs} if _on_features(base) else {}
    return dataclasses.replace(
        base,
        head_epochs=on_features.get("head_epochs", base.head_epochs),
        faces_dir=str(replay_dir),
        out_dir=str(out_dir),
        checkpoint_dir=str(out_dir.parent / "checkpoints"),
        manifest_path="",  # feedback items have no original clip to pair with
        init_from=str(champion_dir),
        lr=on_features.get("lr", policy.lr),
        epochs=policy.epochs,
        frozen_epochs=0,
        warmup_fraction=0.0,
        samples_per_epoch=policy.samples_per_epoch,
        patience=policy.epochs,
        grad_clip=policy.grad_clip,
        identity_weight=0.0,
        resume=False,
        workers=0,
    )


def _on_features(cfg: TrainConfig) -> bool:
    return bool(getattr(model_class(cfg.model), "trains_on_features", False))


def recalibrate(
    model_dir: str | Path, calibration_dir: Path, out_dir: Path, base: CalibrateConfig, progress: bool = False
) -> CalibrateResult:
    """`dfguard calibrate`'s fit, with the champion's settings, on validation plus feedback-train."""
    cfg = dataclasses.replace(
        base,
        model_dir=str(model_dir),
        faces_dir=str(calibration_dir),
        out_dir=str(out_dir),
        report_dir=str(out_dir.parent / "calibration-report"),
    )
    return run_calibrate(cfg, progress=progress)
