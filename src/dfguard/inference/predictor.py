"""The one predictor: a model folder in, verdicts out, for evaluation, calibration, `dfguard detect`, the
service and the dashboard alike.

It applies the model's own recorded preprocessing contract (frames per video, face detector and its
thresholds, alignment, margin, crop size) and aggregation rule, so a model is always fed the way it was
trained and evaluated. A video's score: faces -> the most suspicious face per frame (max) -> frames
aggregated by the model's rule (mean, max or confident frames) -> a logit -> (when calibration fitted
one) fused with the motion evidence of the video's face tracks (`motion.py`) -> temperature-scaled
probability -> FAKE / REAL / UNCERTAIN. A clip model (`temporal`) reads each face track as one clip
instead, and the video takes its most suspicious track. When it cannot judge, the verdict is a status
instead.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from dfguard.calibration import FAKE, REAL, UNCERTAIN, Calibrator, MotionFusion
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.detector import FaceDetector
from dfguard.faces.extract import ExtractedFace, FrameRecord, MediaFaces, build_detector, extract_faces, timed
from dfguard.faces.frames import MAX_FRAME_PIXELS, read_sampled
from dfguard.faces.motion import video_drift
from dfguard.faces.quality import QUALITY_MEASURES
from dfguard.media import MediaError, media_kind
from dfguard.models.aggregation import AggregationRule, rule_of, video_appearance
from dfguard.models.io import WEIGHTS_NAME, load_detector
from dfguard.models.scoring import FaceScores, score_crops
from dfguard.runtime import default_device, torch_threads

NO_FACE, FACE_TOO_SMALL, UNREADABLE, TOO_SHORT = "NO_FACE", "FACE_TOO_SMALL", "UNREADABLE", "TOO_SHORT"
STATUSES = (NO_FACE, FACE_TOO_SMALL, UNREADABLE, TOO_SHORT)
# TOO_SHORT: a video with fewer decodable frames than this (however many are sampled) is not judged:
# it carries no temporal evidence and is more often a broken upload than a real clip.
MIN_VIDEO_FRAMES = 4
# Without a calibrator (an uncalibrated model), the band around 0.5 reported as UNCERTAIN.
DEFAULT_MARGIN = 0.1


@dataclass(frozen=True)
class FaceScore:
    frame_index: int
    timestamp_s: float
    track_id: int
    box: list[float]
    probability: float  # calibrated


@dataclass(frozen=True)
class FrameScore:
    frame_index: int
    timestamp_s: float
    status: str  # OK, NO_FACE or FACE_TOO_SMALL
    probability: float | None  # of its most suspicious face, calibrated; None without a face


@dataclass
class Prediction:
    verdict: str  # FAKE, REAL, UNCERTAIN, or a status (NO_FACE, FACE_TOO_SMALL, UNREADABLE, TOO_SHORT)
    probability: float | None  # calibrated fake probability of the item; None when not judged
    logit: float | None  # the aggregated, uncalibrated logit (with the motion evidence, when fused)
    reason: str = ""  # why a status was given
    frames: list[FrameScore] = field(default_factory=list)
    faces: list[FaceScore] = field(default_factory=list)
    temporal_std: float | None = None  # spread of frame probabilities: low means a consistent verdict
    flip_rate: float | None = None  # share of consecutive scored frames whose verdict side differs
    # How far the inner face moves against the head around it (crop pixels; the most of its tracks);
    # None for a photo or a track of one face. Reals stay near 0.1, pasted faces drift (motion.py).
    drift: float | None = None
    appearance_logit: float | None = None  # the detector's own logit, before the motion evidence
    # The decision threshold of the calibration that judged it (0.5 uncalibrated); None when not judged.
    threshold: float | None = None
    features: list[float] | None = None  # mean face embedding, for drift monitoring
    # The faces' medians of face_px and the quality measures (faces/quality.py): what drift reports and
    # reviewers compare, since a detector fails first on faces unlike those it was trained on.
    quality: dict[str, float | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # decode, faces, motion, classify
    # Which calibration judged it: "video" (motion fused in), "photo" (no motion: appearance alone, on
    # the calibration fitted on validation frames judged one at a time), or "none" (an uncalibrated model).
    calibration: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    crops: list[np.ndarray] = field(default_factory=list, repr=False)  # per face, for Grad-CAM; not saved

    @property
    def judged(self) -> bool:
        return self.verdict not in STATUSES

    def to_dict(self, with_features: bool = False) -> dict[str, Any]:
        crops, self.crops = self.crops, []  # asdict would deep-copy the images
        try:
            data = asdict(self)
        finally:
            self.crops = crops
        data.pop("crops")
        if not with_features:
            data.pop("features")
        return data


class Predictor:
    """A loaded model with its contract, aggregation rule and (when calibrated) calibrator."""

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "",
        threads: int = 1,
        max_frame_pixels: int | None = MAX_FRAME_PIXELS,
    ) -> None:
        self.model_dir = Path(model_dir)
        # Larger frames are shrunk to this as they are read (None: judged as decoded); see frames.py.
        self.max_frame_pixels = max_frame_pixels
        # One media item is a few dozen small tensors: one thread per request. On a busy 2-core machine
        # two threads made `predict` 3-10x slower (idle threads spin-waiting), and a service scales by
        # running one predictor per worker instead.
        self.threads = threads
        self.device = default_device(device)
        model, config = load_detector(self.model_dir)
        self.model = model.to(self.device).eval()
        self.config = config
        if "contract" not in config:
            raise ValueError(f"{self.model_dir} records no preprocessing contract: not a dfguard model")
        self.contract = PreprocessingContract.from_json(json.dumps(config["contract"]))
        self.aggregation: dict[str, Any] = config.get("aggregation", {"frames": "mean"})
        self.calibrator = Calibrator.from_dict(config["calibration"]) if config.get("calibration") else None
        # Items without motion (a photo, a track of one face) are judged by the appearance alone, on its
        # own calibration: the videos' one expects motion evidence they do not have.
        photo = config.get("photo_calibration")
        self.photo_calibrator = Calibrator.from_dict(photo) if photo else None
        self.motion = MotionFusion(**config["motion"]) if config.get("motion") else None
        # Names the exact weights behind a prediction, registered or not (feedback, drift, audits).
        with (self.model_dir / WEIGHTS_NAME).open("rb") as weights:
            self.weights_sha256 = hashlib.file_digest(weights, "sha256").hexdigest()
        self._face_detector: FaceDetector | None = None  # built on first use: stored crops need none

    @property
    def frame_rule(self) -> AggregationRule:
        """How this model's frames make a video's score (`models.aggregation`)."""
        return rule_of(self.aggregation)

    @property
    def identity(self) -> dict[str, Any]:
        return {
            "name": self.config["model"]["name"],
            "weights_sha256": self.weights_sha256,
            "input_size": self.model.preset.input_size,
            "contract_hash": self.contract.hash,
            "calibrated": self.calibrator is not None,
            "photo_calibrated": self.photo_calibrator is not None,
            "motion": self.motion is not None,
            "aggregation": self.aggregation,
        }

    # -- scores ---------------------------------------------------------------------------------------
    def score_crops(self, crops: list[np.ndarray]) -> FaceScores:
        """Logits, features (and a clip model's embeddings) of aligned crops (uint8 BGR, as the face
        dataset stores them)."""
        return score_crops(self.model, crops, device=self.device)

    def video_logits(
        self,
        faces: pd.DataFrame,
        carry: tuple[str, ...] = (),
        embeddings: np.ndarray | None = None,
        drift: pd.Series | None = None,
    ) -> pd.DataFrame:
        """Per-video logits from a table of face logits (columns video_id, frame, logit).

        A frame model: the most suspicious face per frame, then the frames by the model's aggregation
        rule. A clip model judges each face track as one clip instead (`track_clip_logits`: the table
        also needs track_id, and `embeddings` the faces' embeddings from `score_crops`, row for row).
        `drift` (per video_id, from `faces.motion.video_drift`) becomes column `drift`; a model with motion
        fusion needs it, and its `logit` is then the fused one (`appearance_logit`: the detector's own)."""
        videos = video_appearance(self.model, self.frame_rule, faces, carry, embeddings, self.device)
        if drift is not None:
            videos["drift"] = videos["video_id"].map(drift).astype(np.float64)
        return self.fused(videos)

    def fused(self, videos: pd.DataFrame) -> pd.DataFrame:
        """Per-video appearance logits (column `logit`) with the motion evidence of column `drift` fused
        in, the detector's own kept as `appearance_logit`; unchanged for a model without motion fusion."""
        if self.motion is None:
            return videos
        if "drift" not in videos:
            raise ValueError(f"{self.model_dir} fuses motion evidence: the videos' drift is needed")
        videos["appearance_logit"] = videos["logit"]
        videos["logit"] = self.motion.fuse(videos["logit"].to_numpy(), videos["drift"].to_numpy())
        return videos

    def with_motion(self, logits: np.ndarray, drift: float | np.ndarray) -> np.ndarray:
        """Appearance logits with the motion evidence `drift` (one per logit, or one for all) fused in,
        as the calibration expects them; unchanged for a model without motion fusion."""
        logits = np.asarray(logits, np.float64)
        if self.motion is None:
            return logits
        return self.motion.fuse(logits, np.broadcast_to(np.asarray(drift, np.float64), logits.shape))

    def judged_as_photo(self, drift: float | np.ndarray, frames: int | np.ndarray) -> np.ndarray:
        """Which items the photo calibration judges, by their drift (NaN: no motion measured) and their
        frames with a face: a photo (one frame), and, when the model fuses motion, any item without a
        drift, since the videos' calibration expects motion evidence it does not have. None of them for
        a model without a photo calibration."""
        drift = np.asarray(drift, np.float64)
        frames = np.asarray(frames)
        if self.photo_calibrator is None:
            return np.zeros(np.broadcast_shapes(drift.shape, frames.shape), bool)
        return np.isnan(drift) & ((frames <= 1) | (self.motion is not None))

    def calibration_for(self, drift: float, frames: int) -> Calibrator | None:
        """The calibrator that judges one item (see `judged_as_photo`)."""
        return self.photo_calibrator if self.judged_as_photo(drift, frames) else self.calibrator

    def probabilities(
        self, appearance: np.ndarray, drift: float | np.ndarray, frames: int | np.ndarray
    ) -> np.ndarray:
        """Calibrated fake probabilities of appearance logits whose items moved by `drift` over `frames`
        frames with a face (one of each per logit, or one for all): the motion fused in, then the video
        calibration; the photo calibration of the appearance alone for the items `judged_as_photo`."""
        appearance = np.asarray(appearance, np.float64)
        drift = np.broadcast_to(np.asarray(drift, np.float64), appearance.shape)
        result = _probabilities(self.calibrator, self.with_motion(appearance, drift))
        photo = np.broadcast_to(self.judged_as_photo(drift, frames), appearance.shape)
        if photo.any():
            result[photo] = self.photo_calibrator.apply(appearance[photo])
        return result

    def verdicts(
        self, probabilities: np.ndarray, drift: float | np.ndarray, frames: int | np.ndarray
    ) -> list[str]:
        """The verdicts of `probabilities` (from `probabilities`), each by the calibration it came from."""
        shape = np.shape(probabilities)
        drift = np.broadcast_to(np.asarray(drift, np.float64), shape)
        frames = np.broadcast_to(np.asarray(frames), shape)
        items = zip(probabilities, drift, frames, strict=True)
        return [_verdict(self.calibration_for(float(d), int(n)), float(p)) for p, d, n in items]

    # -- media ----------------------------------------------------------------------------------------
    def predict(self, path: str | Path, n_frames: int | None = None) -> Prediction:
        """Judge one video or image file; `n_frames` overrides the contract's frames per video (a
        latency budget trades evidence for speed)."""
        seconds: dict[str, float] = {}
        try:
            with timed(seconds, "decode"):
                n_frames = n_frames or self.contract.frames_for("test")
                sampled = read_sampled(Path(path), n_frames, max_pixels=self.max_frame_pixels)
        except MediaError as err:
            return self.status_of(UNREADABLE, str(err), seconds)
        if sampled.backend != "image" and sampled.frame_count < MIN_VIDEO_FRAMES:
            reason = f"{sampled.frame_count} decodable frames; at least {MIN_VIDEO_FRAMES} are needed"
            return self.status_of(TOO_SHORT, reason, seconds)
        return self.predict_frames(
            sampled.frames, sampled.indices, sampled.timestamps_s, seconds, source_scale=sampled.scale
        )

    def predict_bytes(self, data: bytes, filename: str, n_frames: int | None = None) -> Prediction:
        """Judge an uploaded file. Only the extension of `filename` is used (it picks the decoder), so a
        client's name can neither place nor overwrite a file."""
        name = "upload" + Path(filename).suffix.lower()
        if media_kind(Path(name)) is None:
            return self.status_of(UNREADABLE, f"unsupported file type {Path(name).suffix or '(none)'!r}", {})
        with tempfile.TemporaryDirectory(prefix="dfguard-upload-") as scratch:
            path = Path(scratch) / name
            path.write_bytes(data)
            return self.predict(path, n_frames)

    def predict_frames(
        self,
        frames: list[np.ndarray],
        indices: list[int] | None = None,
        timestamps_s: list[float] | None = None,
        seconds: dict[str, float] | None = None,
        source_scale: float = 1.0,
    ) -> Prediction:
        """Judge decoded frames of one video (or one image), BGR uint8, all the same size.

        `source_scale` is frame pixels per pixel of the client's file (below 1 when reading shrank
        large frames): face boxes are reported in the file's pixels, where a client draws them.
        """
        seconds = dict(seconds or {})
        if not frames:
            return self.status_of(UNREADABLE, "no frames", seconds)
        height, width = frames[0].shape[:2]
        if min(height, width) < self.contract.min_face_px:
            # Any face would be smaller than the model judges (and MTCNN's pyramid is empty below it).
            reason = f"{width}x{height} px frames cannot hold a face of {self.contract.min_face_px} px"
            return self.status_of(FACE_TOO_SMALL, reason, seconds)
        with timed(seconds, "faces"), torch_threads(self.threads):
            media = extract_faces(frames, self._detector(), self.contract, indices, timestamps_s)
        if not media.faces:
            return self._faceless(media, seconds)
        crops = [face.crop for face in media.faces]
        with timed(seconds, "classify"), torch_threads(self.threads):
            scores = self.score_crops(crops)
        table = _face_table(media.faces, scores.logits)
        with timed(seconds, "motion"):
            drift = video_drift(table, lambda row: crops[row])
        with timed(seconds, "classify"), torch_threads(self.threads):
            videos = self.video_logits(table, embeddings=scores.embeddings, drift=drift)
        return self._judgement(media, scores, table, videos, seconds, source_scale)

    def _faceless(self, media: MediaFaces, seconds: dict[str, float]) -> Prediction:
        """The status of frames without a face the model can judge, with each frame's own status, so a
        client sees whether faces were absent or only too small."""
        too_small = any(record.status == FACE_TOO_SMALL for record in media.frames)
        reason = (
            f"faces smaller than {self.contract.min_face_px} px only"
            if too_small
            else "no face found in the sampled frames"
        )
        prediction = self.status_of(FACE_TOO_SMALL if too_small else NO_FACE, reason, seconds)
        prediction.frames = [FrameScore(r.frame_index, r.timestamp_s, r.status, None) for r in media.frames]
        return prediction

    def _judgement(
        self,
        media: MediaFaces,
        scores: FaceScores,
        table: pd.DataFrame,
        videos: pd.DataFrame,
        seconds: dict[str, float],
        source_scale: float,
    ) -> Prediction:
        """The verdict on the video's logit (`videos`, one row), with every face's and frame's score: each
        is its own appearance with the video's motion evidence, so all are on the scale of the verdict."""
        video_drift_px = float(videos["drift"].iloc[0])
        n_frames = int(videos["n_frames"].iloc[0])
        calibrator = self.calibration_for(video_drift_px, n_frames)
        appearance = videos["appearance_logit"] if self.motion else videos["logit"]
        # Without motion, the photo calibration judges the appearance alone: that is the item's logit.
        still = calibrator is not None and calibrator is self.photo_calibrator
        video_logit = float((appearance if still else videos["logit"]).iloc[0])
        face_probs = self.probabilities(scores.logits, video_drift_px, n_frames)
        probability = float(self.probabilities(appearance.to_numpy(), video_drift_px, n_frames)[0])
        # A frame is as suspicious as its most suspicious face: one swapped face in a crowd is a fake.
        frame_logits = table.groupby("frame", sort=True)["logit"].max()
        frame_probs = self.probabilities(frame_logits.to_numpy(), video_drift_px, n_frames)
        threshold = calibrator.threshold if calibrator else 0.5
        return Prediction(
            verdict=_verdict(calibrator, probability),
            probability=round(probability, 6),
            logit=round(video_logit, 6),
            frames=_frame_scores(media.frames, dict(zip(frame_logits.index, frame_probs, strict=True))),
            faces=_face_scores(media.faces, face_probs, source_scale),
            temporal_std=round(float(frame_probs.std()), 6),
            flip_rate=_flip_rate(frame_probs >= threshold),
            threshold=round(float(threshold), 6),
            drift=None if np.isnan(video_drift_px) else round(video_drift_px, 4),
            appearance_logit=round(float(videos["appearance_logit"].iloc[0]), 6) if self.motion else None,
            features=[round(float(v), 5) for v in scores.features.mean(axis=0)],
            quality=_quality(media.faces),
            seconds={k: round(v, 4) for k, v in seconds.items()},
            model=self.identity,
            calibration="none" if calibrator is None else "photo" if still else "video",
            crops=[face.crop for face in media.faces],
        )

    def _detector(self) -> FaceDetector:
        if self._face_detector is None:
            self._face_detector = build_detector(self.contract, "" if self.device == "cpu" else self.device)
        return self._face_detector

    def status_of(self, status: str, reason: str, seconds: dict[str, float] | None = None) -> Prediction:
        """An answer that is a status (the item was not judged), with the reason and the model."""
        return Prediction(
            verdict=status,
            probability=None,
            logit=None,
            reason=reason,
            seconds={k: round(v, 4) for k, v in (seconds or {}).items()},
            model=self.identity,
        )


def _face_table(faces: list[ExtractedFace], logits: np.ndarray) -> pd.DataFrame:
    """The faces of one video as the table `video_logits` and `video_drift` read (video_id 0), so a single
    item is aggregated by the same code as a scored split."""
    return pd.DataFrame(
        {
            "video_id": 0,
            "frame": [face.frame_index for face in faces],
            "track_id": [face.track_id for face in faces],
            "logit": logits,
        }
    )


def _quality(faces: list[ExtractedFace]) -> dict[str, float | None]:
    """The median face size and quality measures of the judged faces; None for a measure no face had
    (JPEG quality where no 8x8 grid shows), which JSON can carry where NaN is not valid."""
    columns = {"face_px": [face.face_px for face in faces]}
    columns |= {name: [getattr(face.quality, name) for face in faces] for name in QUALITY_MEASURES}
    summary = {}
    for name, values in columns.items():
        values = np.asarray(values, np.float64)
        measured = values[~np.isnan(values)]
        summary[name] = round(float(np.median(measured)), 4) if measured.size else None
    return summary


def _frame_scores(frames: list[FrameRecord], by_frame: dict[int, float]) -> list[FrameScore]:
    """Every sampled frame, scored or not: a frame without a face keeps its place (probability None),
    so a client's timeline has no gaps."""
    return [
        FrameScore(
            r.frame_index,
            round(r.timestamp_s, 3),
            r.status,
            round(float(by_frame[r.frame_index]), 6) if r.frame_index in by_frame else None,
        )
        for r in frames
    ]


def _face_scores(
    faces: list[ExtractedFace], probabilities: np.ndarray, source_scale: float
) -> list[FaceScore]:
    """Each face's score with its box in the client's file pixels (frames may have been shrunk by
    `source_scale` when read), where a client draws it."""
    return [
        FaceScore(
            face.frame_index,
            round(face.timestamp_s, 3),
            face.track_id,
            [round(float(v) / source_scale, 1) for v in face.face.box],
            round(float(p), 6),
        )
        for face, p in zip(faces, probabilities, strict=True)
    ]


def _flip_rate(sides: np.ndarray) -> float:
    """The share of consecutive scored frames whose verdict side differs: a verdict that flips from
    frame to frame rests on weak evidence even when its mean is far from the threshold."""
    return round(float(np.mean(sides[1:] != sides[:-1])), 6) if len(sides) > 1 else 0.0


def _probabilities(calibrator: Calibrator | None, logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    return calibrator.apply(logits) if calibrator else expit(logits)


def _verdict(calibrator: Calibrator | None, probability: float) -> str:
    if calibrator:
        return calibrator.verdict(probability)
    if abs(probability - 0.5) < DEFAULT_MARGIN:
        return UNCERTAIN
    return FAKE if probability >= 0.5 else REAL
