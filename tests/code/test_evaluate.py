"""`dfguard calibrate` and `dfguard evaluate` on tiny face datasets, checked against hand computation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit, logit

from dfguard.calibration.stage import run_calibrate
from dfguard.cli import main
from dfguard.config import CalibrateConfig, EvaluateConfig
from dfguard.evaluation.run import run_evaluate
from dfguard.inference.predictor import Predictor
from dfguard.metrics import ece_if_calibrated
from dfguard.models import load_detector, save_detector
from dfguard.transforms import to_batch


def _calibrate(model_dir: Path, faces_dir: Path, out: Path) -> Path:
    cfg = CalibrateConfig(
        model_dir=str(model_dir),
        faces_dir=str(faces_dir),
        out_dir=str(out / "calibrated"),
        report_dir=str(out / "calibration-report"),
    )
    return run_calibrate(cfg, progress=False).model_dir


def _overconfident_copy(model_dir: Path, out: Path, centre: float, factor: float) -> Path:
    """The model with its logits moved by -`centre` and multiplied by `factor` (head weights and bias)."""
    model, config = load_detector(model_dir)
    with torch.no_grad():
        model.head[-1].weight.mul_(factor)
        model.head[-1].bias.sub_(centre).mul_(factor)
    extra = {key: value for key, value in config.items() if key not in ("model", "preset")}
    return save_detector(model, out, extra)


def _ece_by_hand(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = (probabilities >= low) & (
            (probabilities < high) if b < bins - 1 else (probabilities <= high)
        )
        if inside.any():
            total += inside.sum() * abs(probabilities[inside].mean() - labels[inside].mean())
    return total / labels.size


def _auc_by_pairs(labels: np.ndarray, scores: np.ndarray) -> float:
    fakes, reals = scores[labels == 1], scores[labels == 0]
    return float(np.mean([(f > r) + 0.5 * (f == r) for f in fakes for r in reals]))


def test_calibrate_writes_a_deployable_copy_with_its_report(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    faces_dir, model_dir = trained_detector
    calibrated = _calibrate(model_dir, faces_dir, tmp_path)
    assert sorted(p.name for p in calibrated.iterdir()) == sorted(p.name for p in model_dir.iterdir())
    config = json.loads((calibrated / "config.json").read_text())
    source = json.loads((model_dir / "config.json").read_text())
    assert "calibration" not in source, "the trained model is left as it was"
    assert {k: v for k, v in config.items() if k not in ("calibration", "photo_calibration")} == source
    predictor = Predictor(calibrated)
    assert predictor.photo_calibrator is not None
    assert predictor.photo_calibrator.temperature == config["photo_calibration"]["temperature"]
    assert (
        predictor.calibrator is not None
        and predictor.calibrator.temperature == config["calibration"]["temperature"]
    )
    report = json.loads((tmp_path / "calibration-report" / "metrics.json").read_text())
    assert report.keys() >= {
        "ece_before",
        "ece_after",
        "temperature",
        "threshold",
        "real_below",
        "fake_from",
        "photo",
    }
    assert (tmp_path / "calibration-report" / "reliability_validation.png").stat().st_size > 0


def test_calibration_lowers_the_ece_of_an_overconfident_model(
    trained_detector: tuple[Path, Path], face_dataset, tmp_path: Path
) -> None:
    # A model sure of every answer, on data where one video in six carries the wrong label.
    faces_dir = face_dataset(tmp_path / "faces", videos_per_split=36, frames=1)
    faces = pd.read_parquet(faces_dir / "faces.parquet")
    # The tiny model ranks these crops well but sits off-centre: centred and scaled up, it is sure of
    # every answer, right or wrong.
    val = faces[faces["split"] == "val"]
    crops = [cv2.imread(str(faces_dir / c)) for c in val["crop"]]
    logits = Predictor(trained_detector[1]).score_crops(crops).logits
    fake = (val["label"] == "fake").to_numpy()
    centre = (logits[fake].mean() + logits[~fake].mean()) / 2
    scale = 8.0 / (logits[fake].mean() - logits[~fake].mean())
    overconfident = _overconfident_copy(trained_detector[1], tmp_path / "overconfident", centre, scale)
    # One real and one fake video in six carry the other label (videos alternate real, fake).
    mislabelled = faces["video_id"].str.extract(r"(\d+)$")[0].astype(int).mod(12).isin([0, 3])
    faces.loc[mislabelled, "label"] = faces.loc[mislabelled, "label"].map({"real": "fake", "fake": "real"})
    faces.to_parquet(faces_dir / "faces.parquet", index=False)

    calibrated = _calibrate(overconfident, faces_dir, tmp_path)
    calibrator = Predictor(calibrated).calibrator
    assert calibrator.temperature > 2.0
    assert calibrator.ece_after < calibrator.ece_before / 2
    test = run_evaluate(
        EvaluateConfig(model_dir=str(calibrated), faces_dir=str(faces_dir), out_dir=str(tmp_path / "eval")),
        progress=False,
    ).metrics
    # Held out, the gain also depends on how well the tiny model ranks these crops: lower, not halved.
    assert test["video"]["ece"] < 0.75 * test["video_uncalibrated"]["ece"]
    assert test["video"]["auc"] == pytest.approx(test["video_uncalibrated"]["auc"]), (
        "scaling keeps the ranking"
    )


def test_evaluate_writes_the_metrics_computed_by_hand(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    source_faces, model_dir = trained_detector
    faces_dir = tmp_path / "faces"
    shutil.copytree(source_faces, faces_dir)
    faces = pd.read_parquet(faces_dir / "faces.parquet")
    # A second face in one frame of every test video: the frame must score its more suspicious face.
    test = faces[faces["split"] == "test"]
    second = (
        test.groupby("video_id")
        .head(1)
        .assign(crop=test["crop"].iloc[::-1].to_numpy()[: test["video_id"].nunique()])
    )
    faces = pd.concat([faces, second], ignore_index=True)
    faces.to_parquet(faces_dir / "faces.parquet", index=False)
    manifest = pd.DataFrame({"video_id": test["video_id"].unique()})
    manifest["compression"] = np.where(np.arange(len(manifest)) < 3, "c23", "c40")
    manifest["target_identity"] = np.where(np.arange(len(manifest)) % 2 == 0, "ann", "bob")
    manifest.to_parquet(tmp_path / "manifest.parquet")
    calibrated = _calibrate(model_dir, faces_dir, tmp_path)
    cfg = EvaluateConfig(
        model_dir=str(calibrated),
        faces_dir=str(faces_dir),
        manifest_path=str(tmp_path / "manifest.parquet"),
        out_dir=str(tmp_path / "eval"),
    )
    run_evaluate(cfg, progress=False)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())

    # By hand: the model's forward pass on each test crop, max per frame, mean probability per video,
    # temperature scaling and bias, then each metric from its definition.
    model, config = load_detector(calibrated)
    calibration = config["calibration"]
    test = faces[faces["split"] == "test"].reset_index(drop=True)
    with torch.no_grad():
        crops = [cv2.imread(str(faces_dir / crop)) for crop in test["crop"]]
        test["logit"] = model(to_batch(crops, model.preset)).logits.numpy()
    frames = test.groupby(["video_id", "frame"]).agg(logit=("logit", "max"), label=("label", "first"))
    frames["p"] = expit(frames["logit"] / calibration["temperature"] + calibration["bias"])
    frames["y"] = (frames["label"] == "fake").astype(int)
    videos = (
        frames.assign(raw=expit(frames["logit"])).groupby(level=0).agg(raw=("raw", "mean"), y=("y", "first"))
    )
    y = videos["y"].to_numpy()
    p = expit(logit(videos["raw"].to_numpy()) / calibration["temperature"] + calibration["bias"])
    predicted = p >= calibration["threshold"]
    tp, fp = int(np.sum(predicted & (y == 1))), int(np.sum(predicted & (y == 0)))
    fn, tn = int(np.sum(~predicted & (y == 1))), int(np.sum(~predicted & (y == 0)))
    video = written["video"]
    assert video["auc"] == pytest.approx(_auc_by_pairs(y, p), abs=1e-6)
    assert written["frame"]["auc"] == pytest.approx(
        _auc_by_pairs(frames["y"].to_numpy(), frames["p"].to_numpy()), abs=1e-6
    )
    assert written["confusion_matrix"]["rows_true_cols_predicted"] == [[tn, fp], [fn, tp]]
    assert video["accuracy"] == pytest.approx((tp + tn) / y.size, abs=1e-6)
    assert video["precision"] == pytest.approx(tp / (tp + fp) if tp + fp else 0.0, abs=1e-6)
    assert video["recall"] == pytest.approx(tp / (tp + fn), abs=1e-6)
    assert video["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-6)
    assert video["log_loss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), abs=1e-5)
    assert video["ece"] == pytest.approx(_ece_by_hand(y, p), abs=1e-6)
    assert video["threshold"] == pytest.approx(calibration["threshold"], abs=1e-6)
    assert set(written["by_method"]) == {"FaceSwap"} and set(written["by_compression"]) == {"c23", "c40"}
    assert written["by_method"]["FaceSwap"]["auc"] == pytest.approx(video["auc"], abs=1e-6), (
        "one method: all fakes"
    )
    c23 = manifest["video_id"][manifest["compression"] == "c23"]
    in_c23 = videos.index.isin(c23)
    assert written["by_compression"]["c23"]["brier"] == pytest.approx(np.mean((p - y)[in_c23] ** 2), abs=1e-6)

    identity = videos.index.map(dict(zip(manifest["video_id"], manifest["target_identity"], strict=True)))
    per_identity = {}
    for person in ("ann", "bob"):
        mine = np.asarray(identity == person)
        defined = 0 < y[mine].sum() < mine.sum()
        per_identity[person] = _auc_by_pairs(y[mine], p[mine]) if defined else None
        assert written["by_identity"][person]["auc"] == pytest.approx(per_identity[person], abs=1e-6)
    defined_aucs = [a for a in per_identity.values() if a is not None]
    assert written["within_identity_auc"] == pytest.approx(np.mean(defined_aucs) if defined_aucs else None)
    interval = written["video_interval"]
    assert interval["level"] == 0.95 and set(interval) == {"level", "resamples", "videos", "identities"}
    for resampled in ("videos", "identities"):
        assert 0.0 <= interval[resampled]["auc_low"] <= interval[resampled]["auc_high"] <= 1.0
        assert 0.0 <= interval[resampled]["ece_low"] <= interval[resampled]["ece_high"] <= 1.0
    # The ECE a perfectly calibrated model would show on these videos: the same figure as from the
    # written probabilities directly (the p-value from the unrounded ECE: on 6 videos the draws' ECEs
    # tie with it, and the written one is rounded).
    assert written["ece_if_calibrated"] == pytest.approx(
        ece_if_calibrated(p, _ece_by_hand(y, p), resamples=1000, level=0.95), abs=1e-6
    )

    table = pd.read_parquet(tmp_path / "eval" / "videos.parquet").set_index("video_id").loc[videos.index]
    assert table["probability"].to_numpy() == pytest.approx(p, abs=1e-6)
    roc = pd.read_csv(tmp_path / "eval" / "roc.csv")
    assert list(roc.columns) == ["fpr", "tpr"] and roc.iloc[-1].tolist() == [1.0, 1.0]
    assert pd.read_csv(tmp_path / "eval" / "reliability.csv")["count"].sum() == y.size
    for name in ("pr.csv", "roc.png", "pr.png", "reliability.png", "identities.png", "resolved_config.json"):
        assert (tmp_path / "eval" / name).stat().st_size > 0, name


def test_evaluate_cli_with_another_aggregation_rule(
    trained_detector: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    faces_dir, model_dir = trained_detector
    args = ["--params", str(tmp_path / "none.yaml"), "--set", f"evaluate.faces_dir={faces_dir}"]
    args += [
        "--set",
        "evaluate.aggregation=max",
        "evaluate",
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path),
    ]
    assert main([*args, "--no-progress"]) == 0
    assert "video AUC" in capsys.readouterr().out
    videos = pd.read_parquet(tmp_path / "videos.parquet")
    faces = pd.read_parquet(faces_dir / "faces.parquet")
    logits = (
        Predictor(model_dir)
        .score_crops([cv2.imread(str(faces_dir / c)) for c in faces["crop"][faces["split"] == "test"]])
        .logits
    )
    highest = (
        pd.Series(logits, index=faces["video_id"][faces["split"] == "test"].to_numpy()).groupby(level=0).max()
    )
    assert videos.set_index("video_id")["logit"].to_numpy() == pytest.approx(
        highest[videos["video_id"]].to_numpy(), abs=1e-5
    )


def test_calibrate_refuses_to_overwrite_its_source(trained_detector: tuple[Path, Path]) -> None:
    faces_dir, model_dir = trained_detector
    with pytest.raises(ValueError, match="out_dir"):
        run_calibrate(
            CalibrateConfig(model_dir=str(model_dir), faces_dir=str(faces_dir), out_dir=str(model_dir))
        )


def test_evaluate_on_a_split_without_faces_names_the_splits_there_are(
    trained_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    faces_dir, model_dir = trained_detector
    cfg = EvaluateConfig(
        model_dir=str(model_dir), faces_dir=str(faces_dir), split="tset", out_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match=r"no faces in split 'tset' \(splits with faces: test, train, val\)"):
        run_evaluate(cfg, progress=False)
    assert not any(tmp_path.iterdir())  # nothing half-written
