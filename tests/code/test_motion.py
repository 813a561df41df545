"""Motion evidence: the drift of a face against the head around it, and its fusion with a detector's logit."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from dfguard.calibration import fit_motion_fusion
from dfguard.calibration.fusion import DRIFT_FLOOR
from dfguard.calibration.stage import CalibrateResult, run_calibrate
from dfguard.config import CalibrateConfig, EvaluateConfig
from dfguard.evaluation.run import run_evaluate
from dfguard.faces.motion import MAX_PAIRS, face_drift, spread, video_drift
from dfguard.inference.predictor import Predictor
from dfguard.metrics import roc_auc

SIZE = 224


def _scene(seed: int) -> np.ndarray:
    """A textured 'photo' larger than a crop: smoothed noise, like skin, hair and background."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(128, 60, size=(SIZE + 80, SIZE + 80, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 2.5) * 3 - 256, 20, 235).astype(np.uint8)


def _shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    matrix = np.array([[1, 0, dx - 40], [0, 1, dy - 40]], np.float32)
    return cv2.warpAffine(image, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR)


def _track(seed: int, face_drift_px: float, frames: int = 9) -> list[np.ndarray]:
    """Crops of one face over a clip: the camera moves the whole scene; a pasted face (the inner
    half of the crop, feathered) also drifts by up to `face_drift_px` on its own."""
    scene = _scene(seed)
    pasted = _scene(seed + 100)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    inside = ((xx - SIZE / 2) ** 2 / 60**2 + (yy - SIZE / 2) ** 2 / 75**2) < 1
    alpha = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 4)[..., None]
    rng = np.random.default_rng(seed)
    crops = []
    for k in range(frames):
        camera = rng.uniform(-6, 6, size=2)
        own = camera + face_drift_px * np.array([np.cos(k), np.sin(k)]) * (k > 0)
        background = _shifted(scene, *camera).astype(np.float32)
        face = _shifted(pasted if face_drift_px else scene, *own).astype(np.float32)
        crops.append((background * (1 - alpha) + face * alpha).astype(np.uint8))
    return crops


def test_a_face_moving_with_its_head_does_not_drift() -> None:
    assert face_drift(_track(1, 0.0)) < 0.15


@pytest.mark.parametrize("pixels", [1.0, 2.5])
def test_a_pasted_face_that_drifts_is_measured_to_the_pixel(pixels: float) -> None:
    assert face_drift(_track(2, pixels)) == pytest.approx(pixels, abs=0.3)


def test_no_drift_without_two_crops_inside_the_frame() -> None:
    crops = _track(3, 2.0, frames=3)
    assert face_drift(crops[:1]) is None
    assert face_drift([np.zeros_like(c) for c in crops]) is None  # outside the frame: black


def test_a_face_cut_by_the_frames_edge_is_not_measured() -> None:
    still = _track(4, 0.0)
    # The crop reaches 10 px past the frame's top: black there, but the ring and the face are whole.
    for band, measured in ((10, True), (40, False)):  # 40 px: the frame's edge cuts the ring
        bordered = [c.copy() for c in still]
        for crop in bordered:
            crop[:band] = 0
        drift = face_drift(bordered)
        assert (drift is not None and drift < 0.15) if measured else drift is None


def test_spread_reads_the_first_face_and_at_most_max_pairs_later_ones() -> None:
    assert spread(4).tolist() == [0, 1, 2, 3]
    picked = spread(32)
    assert picked[0] == 0 and picked[-1] == 31 and len(picked) == MAX_PAIRS + 1


def test_video_drift_takes_the_most_drifting_track_and_nan_without_motion() -> None:
    still, drifting = _track(5, 0.0, frames=4), _track(6, 2.0, frames=4)
    crops = still + drifting + [still[0]]
    faces = pd.DataFrame(
        {
            "video_id": ["crowd"] * 8 + ["photo"],
            "track_id": [0] * 4 + [1] * 4 + [0],
            "frame": [0, 1, 2, 3] * 2 + [0],
        }
    )
    shuffled = faces.sample(frac=1, random_state=0)  # tracks are put back in frame order
    drift = video_drift(shuffled, lambda row: crops[shuffled.index[row]])
    # The drifting track's own measure, not its nominal 2 px: with 4 frames OpenCV's registration
    # lands at 1.7 px and the still track at 0.2; this test is about which track wins.
    own, calm = face_drift(drifting), face_drift(still)
    assert own is not None and calm is not None and own > 1.0 > 0.5 > calm
    assert drift["crowd"] == pytest.approx(own)
    assert np.isnan(drift["photo"])


def test_fusion_weights_the_evidence_that_separates_and_stays_finite() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    logits = rng.normal(0, 1, 60) + 0.3 * labels  # a weak detector
    drift = np.where(labels == 1, rng.uniform(1, 3, 60), rng.uniform(0.05, 0.3, 60))  # separates fully
    fusion = fit_motion_fusion(logits, drift, labels)
    assert (
        fusion.drift_weight > 0
        and np.isfinite([fusion.appearance_weight, fusion.drift_weight, fusion.bias]).all()
    )
    fused = fusion.fuse(logits, drift)
    assert roc_auc(labels, fused) > roc_auc(labels, logits)
    # An item without motion (a photo) gets the validation videos' mean log drift.
    assert fusion.fuse(np.array([0.5]), np.array([np.nan]))[0] == pytest.approx(
        fusion.appearance_weight * 0.5 + fusion.drift_weight * fusion.missing_log_drift + fusion.bias
    )


@pytest.mark.parametrize(("seed", "l2"), [(0, 1.0), (1, 0.1), (2, 10.0)])
def test_fusion_is_scikit_learns_penalised_logistic_regression(seed: int, l2: float) -> None:
    # Penalty 0.5 * l2 * ||w||^2 on the standardised weights, intercept free, added to the summed
    # log-loss: scikit-learn's objective with C = 1 / l2. Seed 0: the drift separates the classes.
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], 24)
    logits = rng.normal(0, 1, 48) + 0.5 * labels
    drift = rng.uniform(0.05, 0.3, 48) + rng.uniform(0.7 if seed == 0 else 0, 1.5, 48) * labels
    fusion = fit_motion_fusion(logits, drift, labels, l2=l2)
    x = np.column_stack([logits, np.log(drift + DRIFT_FLOOR)])
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    model = LogisticRegression(C=1 / l2, tol=1e-10, max_iter=10_000).fit((x - mean) / std, labels)
    weights = model.coef_[0] / std
    expected = [*weights, model.intercept_[0] - weights @ mean]
    # The fit here stops near the optimum (L-BFGS-B on finite differences), not at it.
    np.testing.assert_allclose(
        [fusion.appearance_weight, fusion.drift_weight, fusion.bias], expected, rtol=1e-3
    )


def test_fusion_needs_a_measured_motion() -> None:
    with pytest.raises(ValueError, match="measurable motion"):
        fit_motion_fusion(np.zeros(4), np.full(4, np.nan), np.array([0, 1, 0, 1]))


def _moving_face_dataset(root: Path, source: Path) -> Path:
    """Val and test videos (3 reals; fakes: 1 FaceSwap, 2 SelfBlend) whose fakes' faces drift against
    their heads (2 px) and whose reals' do not, laid out as `dfguard extract` does, with the contract of
    the face dataset at `source`."""
    rows = []
    for split in ("val", "test"):
        for v in range(6):
            fake = v % 2 == 1
            video_id = f"{split}{v}"
            (root / "crops" / video_id).mkdir(parents=True)
            for frame, crop in enumerate(_track(10 * v + len(split), 2.0 if fake else 0.0, frames=4)):
                name = f"crops/{video_id}/{frame:05d}_t0.png"
                cv2.imwrite(str(root / name), crop)
                rows.append(
                    {
                        "video_id": video_id,
                        "label": "fake" if fake else "real",
                        "method": ("FaceSwap" if v == 1 else "SelfBlend") if fake else "original",
                        "split": split,
                        "frame": frame,
                        "track_id": 0,
                        "crop": name,
                        "subject": True,
                    }
                )
    pd.DataFrame(rows).to_parquet(root / "faces.parquet", index=False)
    shutil.copy(source / "contract.json", root / "contract.json")
    return root


def _calibrate(model_dir: Path, faces: Path, out: Path, **settings: Any) -> CalibrateResult:
    """Calibrated with the motion fusion (off by default) unless `settings` say otherwise."""
    cfg = CalibrateConfig(
        model_dir=str(model_dir),
        faces_dir=str(faces),
        out_dir=str(out / "calibrated"),
        report_dir=str(out / "report"),
        **{"motion": True, **settings},
    )
    return run_calibrate(cfg, progress=False)


def test_calibration_fuses_the_motion_and_evaluation_reports_each_evidence(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    source_faces, model_dir = trained_detector
    faces = _moving_face_dataset(tmp_path / "faces", source_faces)
    calibrated = _calibrate(model_dir, faces, tmp_path / "with-motion")
    assert calibrated.motion is not None and calibrated.motion.drift_weight > 0
    assert json.loads((calibrated.model_dir / "config.json").read_text())["motion"]["drift_weight"] > 0
    assert Predictor(calibrated.model_dir).motion == calibrated.motion

    evaluated = run_evaluate(
        EvaluateConfig(
            model_dir=str(calibrated.model_dir),
            faces_dir=str(faces),
            manifest_path=str(tmp_path / "no-manifest.parquet"),
            out_dir=str(tmp_path / "evaluation"),
        ),
        progress=False,
    )
    videos = pd.read_parquet(evaluated.out_dir / "videos.parquet")
    assert (videos.loc[videos["target"] == 1, "drift"] > 1.5).all()
    assert (videos.loc[videos["target"] == 0, "drift"] < 0.3).all()
    assert evaluated.metrics["motion_video_auc"] == 1.0
    assert evaluated.metrics["appearance_video_auc"] == pytest.approx(
        roc_auc(videos["target"].to_numpy(), videos["appearance_logit"].to_numpy())
    )
    assert evaluated.metrics["video"]["auc"] == 1.0

    # Items without motion get their own calibration, fitted on the validation frames judged one at a
    # time; the evaluation reports the split's frames judged that way.
    faces_val = pd.read_parquet(faces / "faces.parquet").query("split == 'val'")
    assert calibrated.photo.n_validation == faces_val.groupby(["video_id", "frame"]).ngroups
    assert json.loads((calibrated.model_dir / "config.json").read_text())["photo_calibration"] == (
        dataclasses.asdict(calibrated.photo)
    )
    assert evaluated.metrics["photo"]["n"] == evaluated.metrics["frame"]["n"]
    assert evaluated.metrics["model"]["photo_calibrated"]

    # Calibrated again without the motion: the fusion fitted before does not survive.
    again = _calibrate(calibrated.model_dir, faces, tmp_path / "without-motion", motion=False)
    assert again.motion is None and "motion" not in json.loads((again.model_dir / "config.json").read_text())


def test_calibration_fits_on_the_methods_it_is_told(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    source_faces, model_dir = trained_detector
    faces = _moving_face_dataset(tmp_path / "faces", source_faces)
    assert _calibrate(model_dir, faces, tmp_path / "a").calibrator.n_validation == 6
    # The FaceSwap video is left out.
    assert (
        _calibrate(model_dir, faces, tmp_path / "b", fit_methods=("SelfBlend",)).calibrator.n_validation == 5
    )
    with pytest.raises(ValueError, match="fakes of NeuralTextures only"):
        _calibrate(model_dir, faces, tmp_path / "c", fit_methods=("NeuralTextures",))
