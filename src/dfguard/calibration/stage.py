"""`dfguard calibrate`: the motion fusion (`calibration.fusion`), then temperature scaling, threshold and
UNCERTAIN band, fitted on the validation split's video-level logits, written into a complete,
deployable copy of the model folder."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from dfguard.calibration.fusion import MotionFusion, fit_motion_fusion
from dfguard.calibration.temperature import Calibrator, fit_calibrator
from dfguard.config import CalibrateConfig, save_resolved
from dfguard.metrics import METRICS_NAME
from dfguard.models.aggregation import rule_of, score_split
from dfguard.models.io import CONFIG_NAME, load_detector
from dfguard.plots import plot_reliability
from dfguard.runtime import default_device

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrateResult:
    model_dir: Path
    calibrator: Calibrator
    motion: MotionFusion | None
    photo: Calibrator  # of items without motion


def run_calibrate(cfg: CalibrateConfig, progress: bool = True) -> CalibrateResult:
    """Fit on `cfg.model_dir`'s validation videos; write the calibrated model to `cfg.out_dir`."""
    source, out = Path(cfg.model_dir), Path(cfg.out_dir)
    if source.resolve() == out.resolve():
        raise ValueError("calibrate writes a new model folder: out_dir must differ from model_dir")
    # Fit on the detector's raw logits (the appearance evidence), even when re-calibrating a calibrated
    # model, aggregated by the model's own rule.
    device = default_device()
    model, config = load_detector(source)
    rule = rule_of(config.get("aggregation", {}))
    faces, videos = score_split(model.to(device).eval(), rule, cfg.faces_dir, "val", device, progress)
    if cfg.fit_methods:
        videos = videos[(videos["target"] == 0) | videos["method"].isin(cfg.fit_methods)]
        faces = faces[(faces["target"] == 0) | faces["method"].isin(cfg.fit_methods)]
    labels, logits = videos["target"].to_numpy(), videos["logit"].to_numpy()
    if labels.min() == labels.max():
        kept = f" (fakes of {', '.join(cfg.fit_methods)} only)" if cfg.fit_methods else ""
        raise ValueError(f"the validation split needs real and fake videos to calibrate on{kept}")
    drift = videos["drift"].to_numpy()
    motion = _motion_fusion(cfg, logits, drift, labels)
    if motion is not None:
        logits = motion.fuse(logits, drift)
    calibrator = fit_calibrator(logits, labels, cfg.target_precision, cfg.max_uncertain_fraction)
    photo = _photo_calibrator(cfg, faces)

    # Written beside the destination, then swapped in: a half-written model folder is never served.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    config = json.loads((partial / CONFIG_NAME).read_text())
    config["calibration"] = dataclasses.asdict(calibrator)
    config.pop("motion", None)  # a re-calibrated model keeps no fusion fitted before
    if motion is not None:
        config["motion"] = dataclasses.asdict(motion)
    config["photo_calibration"] = dataclasses.asdict(photo)
    (partial / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)

    report = Path(cfg.report_dir)
    report.mkdir(parents=True, exist_ok=True)
    report_metrics = {
        **dataclasses.asdict(calibrator),
        "motion": config.get("motion"),
        "photo": config["photo_calibration"],
    }
    (report / METRICS_NAME).write_text(json.dumps(report_metrics, indent=2, sort_keys=True) + "\n")
    plot_reliability(
        {"before": (labels, expit(logits)), "after": (labels, calibrator.apply(logits))},
        report / "reliability_validation.png",
        title="Validation videos: before and after temperature scaling",
    )
    save_resolved(cfg, report)
    return CalibrateResult(out, calibrator, motion, photo)


def _photo_calibrator(cfg: CalibrateConfig, faces: pd.DataFrame) -> Calibrator:
    """The calibration of items without motion (photos, tracks of one face), fitted on the validation
    videos' frames judged one at a time, as a photo is: each frame's most suspicious face, by its
    appearance alone. A photo judged on the videos' calibration would get the validation videos' mean
    drift as its motion, and a threshold fitted where the drift decides."""
    frames = faces.groupby(["video_id", "frame"], sort=False).agg(
        logit=("logit", "max"), target=("target", "first")
    )
    return fit_calibrator(
        frames["logit"].to_numpy(),
        frames["target"].to_numpy(),
        cfg.target_precision,
        cfg.max_uncertain_fraction,
    )


def _motion_fusion(
    cfg: CalibrateConfig, logits: np.ndarray, drift: np.ndarray, labels: np.ndarray
) -> MotionFusion | None:
    """The motion fusion fitted on the validation videos whose motion could be measured; None when
    `cfg.motion` is off or those videos are not of both classes (photos, tracks of one face)."""
    if not cfg.motion:
        return None
    measured = ~np.isnan(drift)
    if not measured.any() or labels[measured].min() == labels[measured].max():
        log.warning(
            "%d of %d validation videos have a measurable motion, not of both classes: calibrated "
            "without motion evidence",
            int(measured.sum()),
            len(drift),
        )
        return None
    return fit_motion_fusion(logits, drift, labels)
