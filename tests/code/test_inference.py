"""The Predictor and what is built on it: statuses on real media, calibrate, evaluate, detect, Grad-CAM,
ONNX export. Models are tiny `small_cnn`s trained here on a tiny face dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from dfguard.cli import main
from dfguard.config import CalibrateConfig, EvaluateConfig, TrainConfig
from dfguard.evaluation.calibrate import run_calibrate
from dfguard.evaluation.metrics import roc_auc
from dfguard.evaluation.run import run_evaluate
from dfguard.inference.gradcam import grad_cam
from dfguard.inference.predictor import (
    FACE_TOO_SMALL,
    NO_FACE,
    TOO_SHORT,
    UNREADABLE,
    Predictor,
)
from dfguard.inference.report import report_folder
from dfguard.training.run import train_detector


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, face_dataset) -> tuple[Path, Path]:
    """A face dataset and a small model trained on it (1 frozen + 2 tuned epochs, a few seconds)."""
    root = tmp_path_factory.mktemp("inference")
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


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory, face_scenes) -> Path:
    import cv2

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
    (root / "corrupt.mp4").write_bytes(b"\x00garbage" * 300)
    (root / "empty.mp4").write_bytes(b"")
    return root


def test_predictor_statuses_on_real_media(trained: tuple[Path, Path], media_dir: Path) -> None:
    predictor = Predictor.load(trained[1])
    face = predictor.predict(media_dir / "face.mp4")
    assert face.judged and face.verdict in ("FAKE", "REAL", "UNCERTAIN")
    assert 0.0 <= face.probability <= 1.0 and len(face.faces) == 8
    assert {f.status for f in face.frames} == {"OK"}
    assert face.seconds.keys() >= {"decode", "faces", "classify"}
    assert face.model["contract_hash"] == predictor.contract.hash
    image = predictor.predict(media_dir / "portrait.png")
    assert image.judged and len(image.frames) == 1
    assert predictor.predict(media_dir / "tiny_face.mp4").verdict == FACE_TOO_SMALL
    assert predictor.predict(media_dir / "room.mp4").verdict == NO_FACE
    assert predictor.predict(media_dir / "blip.mp4").verdict == TOO_SHORT
    for bad in ("corrupt.mp4", "empty.mp4", "missing.mp4"):
        prediction = predictor.predict(media_dir / bad)
        assert prediction.verdict == UNREADABLE and prediction.reason, bad
    assert json.dumps(face.to_dict())  # the report format is plain JSON


def test_video_score_is_the_mean_of_frame_probabilities_of_the_most_suspicious_face(
    trained: tuple[Path, Path],
) -> None:
    predictor = Predictor.load(trained[1])
    faces = pd.DataFrame({"video_id": "v", "frame": [0, 0, 1, 2], "logit": [-2.0, 1.0, 0.0, -1.0]})
    expected = np.mean(expit([1.0, 0.0, -1.0]))
    assert expit(predictor.video_logits(faces)["logit"].iloc[0]) == pytest.approx(expected)


def test_calibrate_writes_a_calibrated_copy_and_evaluate_agrees_with_hand_computation(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    faces_dir, model_dir = trained
    calibrated = run_calibrate(
        CalibrateConfig(
            model_dir=str(model_dir),
            faces_dir=str(faces_dir),
            out_dir=str(tmp_path / "calibrated"),
            report_dir=str(tmp_path / "calibration-report"),
        ),
        progress=False,
    )
    config = json.loads((calibrated.model_dir / "config.json").read_text())
    assert config["calibration"]["temperature"] == calibrated.calibrator.temperature > 0
    # Temperature scaling minimises the validation log-loss (ECE on six videos is too coarse to test).
    assert calibrated.calibrator.nll_after <= calibrated.calibrator.nll_before + 1e-9
    assert (tmp_path / "calibration-report" / "reliability_validation.png").is_file()
    assert "calibration" not in json.loads((model_dir / "config.json").read_text()), "source untouched"

    result = run_evaluate(
        EvaluateConfig(
            model_dir=str(calibrated.model_dir),
            faces_dir=str(faces_dir),
            manifest_path=str(tmp_path / "no-manifest.parquet"),
            out_dir=str(tmp_path / "eval"),
        ),
        progress=False,
    )
    videos = pd.read_parquet(tmp_path / "eval" / "videos.parquet")
    # By hand: score each test crop, mean the frame probabilities per video, temperature-scale.
    predictor = Predictor.load(calibrated.model_dir)
    faces = pd.read_parquet(faces_dir / "faces.parquet")
    faces = faces[faces.split == "test"]
    import cv2

    logits, _ = predictor.score_crops([cv2.imread(str(faces_dir / c)) for c in faces.crop])
    by_video = pd.Series(expit(logits), index=faces.video_id.to_numpy()).groupby(level=0).mean()
    for row in videos.itertuples():
        assert expit(row.logit) == pytest.approx(by_video[row.video_id], abs=1e-6)
    targets = videos.target.to_numpy()
    pairs = [
        (f > r) + 0.5 * (f == r)
        for f in videos.probability[targets == 1]
        for r in videos.probability[targets == 0]
    ]
    assert result.metrics["video"]["auc"] == pytest.approx(np.mean(pairs), abs=1e-6)
    assert result.metrics["video"]["auc"] == pytest.approx(roc_auc(targets, videos.probability), abs=1e-6)
    assert set(result.metrics["by_method"]) == {"FaceSwap"}
    assert result.metrics["by_compression"].keys() == {"unknown"}
    for name in ("metrics.json", "roc.csv", "pr.csv", "reliability.csv", "roc.png", "reliability.png"):
        assert (tmp_path / "eval" / name).is_file(), name


def test_calibrate_refuses_to_overwrite_its_source(trained: tuple[Path, Path]) -> None:
    faces_dir, model_dir = trained
    with pytest.raises(ValueError, match="out_dir"):
        run_calibrate(
            CalibrateConfig(model_dir=str(model_dir), faces_dir=str(faces_dir), out_dir=str(model_dir))
        )


def test_detect_cli_writes_reports_inside_the_report_folder(
    trained: tuple[Path, Path], media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["detect", str(media_dir), "--model", str(trained[1]), "--report", str(tmp_path / "r")]) == 0
    printed = capsys.readouterr().out
    assert "UNREADABLE" in printed and "NO_FACE" in printed and "TOO_SHORT" in printed
    folder = report_folder(tmp_path / "r", media_dir / "face.mp4")
    report = json.loads((folder / "report.json").read_text())
    assert report["file"] == "face.mp4" and len(report["frames"]) == 8
    assert (folder / "timeline.png").is_file()
    assert len(list(folder.glob("gradcam_*.png"))) == 3
    assert not (report_folder(tmp_path / "r", media_dir / "room.mp4") / "timeline.png").exists()
    tricky = report_folder(tmp_path / "r", Path("../../etc/pass wd..mp4"))
    assert tricky.parent == tmp_path / "r" and "/" not in tricky.name and not tricky.name.startswith(".")


def test_grad_cam_is_a_crop_sized_non_constant_map(trained: tuple[Path, Path]) -> None:
    import cv2

    faces_dir, model_dir = trained
    predictor = Predictor.load(model_dir)
    crops = [cv2.imread(str(p)) for p in sorted((faces_dir / "crops").rglob("*.png"))[:3]]
    heat = grad_cam(predictor.model, crops)
    assert heat.shape == (3, *crops[0].shape[:2])
    assert heat.min() >= 0 and heat.max() <= 1 and heat.std() > 0


def test_onnx_export_matches_torch_and_a_failed_check_leaves_no_file(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    from dfguard.export.onnx import OnnxMismatchError, export_onnx

    result = export_onnx(trained[1], tmp_path / "model.onnx")
    assert result.max_abs_logit_diff < 1e-3 and result.path.stat().st_size > 0
    assert (tmp_path / "model.config.json").is_file()
    with pytest.raises(OnnxMismatchError):
        export_onnx(trained[1], tmp_path / "strict.onnx", tolerance=-1.0)
    assert not (tmp_path / "strict.onnx").exists()


def test_missing_contract_is_refused(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(trained[1], copy)
    config = json.loads((copy / "config.json").read_text())
    config.pop("contract")
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="contract"):
        Predictor.load(copy)
