"""A tiny trained detector, for the tests that need one model that learnt something (a few seconds)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def train_tiny_detector(root: Path, face_dataset: Callable[..., Path], **settings: Any) -> tuple[Path, Path]:
    """(face dataset, model folder): a small_cnn at 32 px trained on a tiny face dataset under `root`,
    with `settings` (TrainConfig fields) on top."""
    from dfguard.config import TrainConfig
    from dfguard.training.run import train_detector

    faces_dir = face_dataset(root / "faces", videos_per_split=6, frames=4)
    cfg = TrainConfig(
        faces_dir=str(faces_dir),
        out_dir=str(root / "model"),
        checkpoint_dir=str(root / "checkpoints"),
        model="small_cnn",
        input_size=32,
        lr=3e-3,
        **settings,
    )
    return faces_dir, train_detector(cfg, progress=False).model_dir
