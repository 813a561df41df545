"""`dfguard calibrate`: temperature scaling, threshold and UNCERTAIN band, fitted on the validation
split's video-level logits, written into a complete, deployable copy of the model folder."""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from scipy.special import expit

from dfguard.calibration import Calibrator, fit_calibrator
from dfguard.config import CalibrateConfig, save_resolved
from dfguard.evaluation.plots import plot_reliability
from dfguard.evaluation.run import score_split
from dfguard.inference.predictor import Predictor
from dfguard.models.io import CONFIG_NAME

METRICS_NAME = "metrics.json"


@dataclass(frozen=True)
class CalibrateResult:
    model_dir: Path
    calibrator: Calibrator


def run_calibrate(cfg: CalibrateConfig, progress: bool = True) -> CalibrateResult:
    """Fit on `cfg.model_dir`'s validation videos; write the calibrated model to `cfg.out_dir`."""
    source, out = Path(cfg.model_dir), Path(cfg.out_dir)
    if source.resolve() == out.resolve():
        raise ValueError("calibrate writes a new model folder: out_dir must differ from model_dir")
    predictor = Predictor(source)
    predictor.calibrator = None  # fit on the raw logits, even when re-calibrating a calibrated model
    _, videos = score_split(predictor, cfg.faces_dir, "val", progress)
    labels, logits = videos["target"].to_numpy(), videos["logit"].to_numpy()
    if labels.min() == labels.max():
        raise ValueError("the validation split needs real and fake videos to calibrate on")
    calibrator = fit_calibrator(logits, labels, cfg.target_accuracy, cfg.max_uncertain_fraction)

    # Written beside the destination, then swapped in: a half-written model folder is never served.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    config = json.loads((partial / CONFIG_NAME).read_text())
    config["calibration"] = dataclasses.asdict(calibrator)
    (partial / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)

    report = Path(cfg.report_dir)
    report.mkdir(parents=True, exist_ok=True)
    (report / METRICS_NAME).write_text(calibrator.to_json())
    plot_reliability(
        {"before": (labels, expit(logits)), "after": (labels, calibrator.apply(logits))},
        report / "reliability_validation.png",
        title="Validation videos: before and after temperature scaling",
    )
    save_resolved(cfg, report)
    return CalibrateResult(out, calibrator)
