"""Fixtures of the registry and promotion tests (a migrated MLflow store to copy, since a fresh one takes
about 2 s to create, and a tiny saved model, once per test module) and of the inference tests (a small
model trained on a tiny face dataset, and real media covering every predictor status, once per session:
four test modules share them)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from registry_helpers import migrated_store, save_tiny_model


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder `tempfile` makes new folders under, for this test only: a test of code that makes
    temporary folders can then see what it leaves behind, and leaves nothing in the machine's /tmp."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_store(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "detector")


@pytest.fixture(scope="session")
def trained_detector(tmp_path_factory: pytest.TempPathFactory, face_dataset) -> tuple[Path, Path]:
    """(face dataset, model folder): a small_cnn trained on it (1 frozen + 2 tuned epochs, a few seconds)."""
    from dfguard.config import TrainConfig
    from dfguard.training.run import train_detector

    root = tmp_path_factory.mktemp("trained")
    faces_dir = face_dataset(root / "faces", videos_per_split=6, frames=4)
    cfg = TrainConfig(
        faces_dir=str(faces_dir),
        out_dir=str(root / "model"),
        checkpoint_dir=str(root / "checkpoints"),
        model="small_cnn",
        input_size=32,
        epochs=3,
        batch_size=8,
        samples_per_epoch=64,
        lr=3e-3,
    )
    return faces_dir, train_detector(cfg, progress=False).model_dir


@pytest.fixture(scope="session")
def inference_media(tmp_path_factory: pytest.TempPathFactory, face_scenes) -> Path:
    """One file per predictor outcome: a face video, a tiny-face video, a faceless video, a 2-frame
    video, a portrait image, an image too small to hold a face, a corrupt and an empty file."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("media")
    face_scenes.video(
        root / "face.mp4", [face_scenes.frame([("obama", (150 + i, 120), 100)])[0] for i in range(8)]
    )
    face_scenes.video(
        root / "tiny_face.mp4", [face_scenes.frame([("obama", (150, 120), 48)])[0] for _ in range(8)]
    )
    rng = np.random.default_rng(1)
    room = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), np.uint8), (0, 0), 4) for _ in range(8)]
    face_scenes.video(root / "room.mp4", room)
    face_scenes.video(root / "blip.mp4", [face_scenes.frame([("obama", (150, 120), 100)])[0]] * 2)
    cv2.imwrite(str(root / "portrait.png"), face_scenes.frame([("biden", (160, 120), 110)])[0])
    cv2.imwrite(
        str(root / "thumbnail.png"), cv2.resize(face_scenes.frame([("biden", (160, 120), 110)])[0], (60, 45))
    )
    (root / "corrupt.mp4").write_bytes(b"\x00garbage" * 300)
    (root / "empty.mp4").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def served_records(trained_detector, inference_media) -> list:
    """PredictionRecords made as the service makes them (`judge` then `store_record`, uploads kept) by
    the trained detector on a face video, a portrait and a faceless clip."""
    from dfguard.config import ServeConfig
    from dfguard.inference.predictor import Predictor
    from dfguard.serving.detection import Upload, judge, store_record
    from dfguard.serving.models import ServedModel

    _, model_dir = trained_detector
    served = ServedModel(Predictor(model_dir), str(model_dir), "1", "champion", {"name": "small_cnn"})
    records = []
    for name in ("face.mp4", "portrait.png", "room.mp4"):
        judgement = judge(served, Upload.of((inference_media / name).read_bytes()), ServeConfig())
        records.append(store_record(judgement, served, "tests", keep_upload=True))
    return records
