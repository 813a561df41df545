"""`dfguard detect --report DIR`: a prediction as files people can read: JSON, a confidence timeline,
and Grad-CAM overlays of the most suspicious faces."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")  # before pyplot: servers and CI have no display

import matplotlib.pyplot as plt
import numpy as np

from dfguard.inference.gradcam import grad_cam, overlay
from dfguard.inference.predictor import DEFAULT_MARGIN, FaceScore, Prediction, Predictor


@dataclass(frozen=True)
class Explanation:
    face: FaceScore
    side: str  # "fake" or "real": the call whose evidence the map shows
    image: np.ndarray  # the crop beside its Grad-CAM overlay, BGR


REPORT_NAME = "report.json"
TIMELINE_NAME = "timeline.png"
TOP_FACES = 3


def report_folder(root: Path, media_path: Path) -> Path:
    """A folder under `root` for one input: its sanitised name plus a hash of its full path, so names
    from users (`../../etc`, spaces, unicode) can neither escape `root` nor collide."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", media_path.name).strip("._")[:60] or "media"
    digest = hashlib.sha256(str(media_path.resolve()).encode()).hexdigest()[:8]
    return root / f"{stem}-{digest}"


def write_report(prediction: Prediction, predictor: Predictor, media_path: Path, root: Path) -> Path:
    """Write the report of one prediction; returns its folder."""
    folder = report_folder(root, media_path)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"file": media_path.name, **prediction.to_dict()}
    (folder / REPORT_NAME).write_text(json.dumps(data, indent=2) + "\n")
    if prediction.judged:
        _timeline(prediction, predictor, folder / TIMELINE_NAME)
        _grad_cams(prediction, predictor, folder)
    return folder


def _timeline(prediction: Prediction, predictor: Predictor, path: Path) -> None:
    scored = [f for f in prediction.frames if f.probability is not None]
    calibrator = predictor.calibrator
    threshold = calibrator.threshold if calibrator else 0.5
    band = (
        (calibrator.real_below, calibrator.fake_from)
        if calibrator
        else (0.5 - DEFAULT_MARGIN, 0.5 + DEFAULT_MARGIN)
    )
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.axhspan(*band, color="grey", alpha=0.2, label="UNCERTAIN band")
    ax.axhline(threshold, color="black", lw=0.8, ls="--", label="threshold")
    ax.plot([f.timestamp_s for f in scored], [f.probability for f in scored], marker="o", label="frame")
    ax.axhline(prediction.probability, color="tab:red", lw=1.2, label=f"video: {prediction.verdict}")
    ax.set(xlabel="time (s)", ylabel="fake probability", ylim=(-0.02, 1.02), title="Confidence timeline")
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def explanations(prediction: Prediction, predictor: Predictor, top: int = TOP_FACES) -> list[Explanation]:
    """Grad-CAM of the `top` most suspicious faces, most suspicious first: each face's crop beside its
    overlay (BGR), with the side of the call the map explains."""
    if not prediction.crops:
        return []
    order = np.argsort([-face.probability for face in prediction.faces])[:top]
    crops = [prediction.crops[i] for i in order]
    heat = grad_cam(predictor.model, crops, predictor.device)
    # Temperature scaling keeps the logit's sign: p >= 0.5 is the side Grad-CAM explained.
    return [
        Explanation(
            prediction.faces[i],
            "fake" if prediction.faces[i].probability >= 0.5 else "real",
            np.hstack([crop, overlay(crop, cam)]),
        )
        for i, crop, cam in zip(order, crops, heat, strict=True)
    ]


def _grad_cams(prediction: Prediction, predictor: Predictor, folder: Path) -> None:
    for rank, shown in enumerate(explanations(prediction, predictor), start=1):
        face = shown.face
        name = (
            f"gradcam_{rank}_frame{face.frame_index:05d}_t{face.track_id}_p{face.probability:.2f}"
            f"_{shown.side}-evidence.png"
        )
        cv2.imwrite(str(folder / name), shown.image)
