"""One prediction as the store keeps it, checked where it is made.

A record is validated when it is built, in the request that made the prediction: the writer thread
retries a failed write until it succeeds, so a record that could never be written must be refused
before it is queued, not discovered there.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

# The quality summary stored as columns (drift reports compare them): the median face size and the
# measures of `dfguard.faces.quality`. A new measure needs a schema step; the tests check both agree.
QUALITY_KEYS = ("face_px", "sharpness", "brightness", "jpeg_quality", "blockiness")
MEDIA_KINDS = ("image", "video")
LABELS = ("fake", "real", "unsure")
ROLES = ("reviewer", "engineer")  # of the dashboard's users: engineers also promote and roll back models
# What a reviewer may say a fake is (or leave empty): the families detectors are compared on.
MANIPULATIONS = ("face_swap", "reenactment", "lip_sync", "synthetic", "attribute_edit", "other")

PREDICTION_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
SHA256 = re.compile(r"[0-9a-f]{64}")
# Uploads are saved under their content hash plus this suffix: only a short lowercase extension, so
# nothing a client sends can reach a path (the service picks it from the sniffed content).
UPLOAD_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")
VERDICT = re.compile(r"[A-Z][A-Z_]{0,31}")  # FAKE, REAL, UNCERTAIN or a status such as NO_FACE
SOURCE = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_sha256(value: str, what: str) -> str:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise ValueError(f"{what} must be 64 lowercase hex digits (a SHA-256), got {value!r}")
    return value


def check_upload_suffix(suffix: str) -> str:
    if not isinstance(suffix, str) or not UPLOAD_SUFFIX.fullmatch(suffix):
        raise ValueError(f"upload suffix must match {UPLOAD_SUFFIX.pattern} (such as '.mp4'), got {suffix!r}")
    return suffix


def check_label(label: str) -> str:
    if label not in LABELS:
        raise ValueError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    return label


def check_manipulation(manipulation: str | None) -> str | None:
    """None (or "") for no kind given, else one of MANIPULATIONS."""
    if manipulation in (None, ""):
        return None
    if manipulation not in MANIPULATIONS:
        raise ValueError(
            f"manipulation must be one of {', '.join(MANIPULATIONS)} or empty, got {manipulation!r}"
        )
    return manipulation


def utc(moment: datetime, what: str) -> datetime:
    """`moment` in UTC; a naive datetime is refused, as its zone can only be guessed."""
    if not isinstance(moment, datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got {moment!r}")
    return moment.astimezone(UTC)


def _optional_float(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite or None, got {value!r}")
    return number


def _check_json(value: Any, what: str) -> None:
    """JSON both SQLite and PostgreSQL accept: plain Python values, no NaN or infinity."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} is not storable as JSON: {err}") from err


@dataclass(frozen=True)
class PredictionRecord:
    """A prediction with what produced it (model, weights), what it was made from (the upload's hash,
    the face crops) and what the predictor measured. `crops` and `upload` become files, not columns."""

    prediction_id: str  # uuid4 hex, made by the caller: a retried write finds the row it already made
    created_at: datetime  # timezone-aware; kept as UTC
    content_sha256: str  # of the uploaded bytes; "" for an upload refused unread (too large)
    media_kind: str  # "image" or "video"; "" for content that is neither (refused before judging)
    model_name: str
    weights_sha256: str  # names the exact weights, registered or not ("" when unknown)
    verdict: str  # FAKE, REAL, UNCERTAIN, or a status (NO_FACE, UNREADABLE, ...)
    probability: float | None  # calibrated fake probability; None when not judged
    client_key_id: str = ""  # the API key's id; "" when anonymous
    source: str = "service"  # "service", or "detect" for the CLI
    model_version: str = ""  # registry version; "" for a local model folder
    model_alias: str = ""
    calibration: str = ""  # "video", "photo" or "none"
    reason: str = ""  # why a status was given
    logit: float | None = None
    appearance_logit: float | None = None
    temporal_std: float | None = None
    flip_rate: float | None = None
    drift: float | None = None
    threshold: float | None = None  # of the calibration that judged it
    n_faces: int | None = None  # None counts `faces`
    n_frames: int | None = None  # None counts `frames`
    quality: dict[str, float | None] = field(default_factory=dict)  # QUALITY_KEYS; NaN or None: unmeasured
    features: list[float] | None = field(default=None, repr=False)  # mean face embedding (drift)
    faces: list[dict[str, Any]] = field(default_factory=list, repr=False)
    frames: list[dict[str, Any]] = field(default_factory=list, repr=False)
    seconds: dict[str, float] = field(default_factory=dict)
    crops: list[np.ndarray] = field(default_factory=list, repr=False, compare=False)  # uint8 BGR
    upload: bytes | None = field(default=None, repr=False)
    upload_suffix: str = ""  # from content sniffing; never the client's file name

    def __post_init__(self) -> None:
        if not isinstance(self.prediction_id, str) or not PREDICTION_ID.fullmatch(self.prediction_id):
            raise ValueError(f"prediction_id must be a uuid4 hex (32 hex digits), got {self.prediction_id!r}")
        object.__setattr__(self, "created_at", utc(self.created_at, "created_at"))
        if self.content_sha256 or self.upload is not None:
            check_sha256(self.content_sha256, "content_sha256")
        if self.weights_sha256:
            check_sha256(self.weights_sha256, "weights_sha256")
        if self.media_kind not in (*MEDIA_KINDS, ""):
            raise ValueError(
                f"media_kind must be one of {', '.join(MEDIA_KINDS)} or '' (no supported media), "
                f"got {self.media_kind!r}"
            )
        if not isinstance(self.verdict, str) or not VERDICT.fullmatch(self.verdict):
            raise ValueError(
                f"verdict must be an upper-case word such as FAKE or NO_FACE, got {self.verdict!r}"
            )
        if not isinstance(self.source, str) or not SOURCE.fullmatch(self.source):
            raise ValueError(f"source must be a short lower-case name such as 'service', got {self.source!r}")
        probability = _optional_float(self.probability, "probability")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must lie in [0, 1], got {probability}")
        object.__setattr__(self, "probability", probability)
        for name in ("logit", "appearance_logit", "temporal_std", "flip_rate", "drift", "threshold"):
            object.__setattr__(self, name, _optional_float(getattr(self, name), name))
        unknown = sorted(set(self.quality) - set(QUALITY_KEYS))
        if unknown:
            raise ValueError(f"unknown quality measures {unknown}; stored ones: {', '.join(QUALITY_KEYS)}")
        for key, value in self.quality.items():
            if value is not None and math.isinf(float(value)):
                raise ValueError(f"quality {key} must be a number, NaN or None, got {value!r}")
        if self.features is not None:
            features = [float(v) for v in self.features]
            if not all(math.isfinite(v) for v in features):
                raise ValueError("features must be finite")
            object.__setattr__(self, "features", features)
        for name in ("faces", "frames", "seconds"):
            _check_json(getattr(self, name), name)
        for i, crop in enumerate(self.crops):
            if not (
                isinstance(crop, np.ndarray)
                and crop.dtype == np.uint8
                and crop.ndim == 3
                and crop.shape[2] == 3
                and crop.size
            ):
                described = f"{crop.dtype} {crop.shape}" if isinstance(crop, np.ndarray) else type(crop)
                raise ValueError(f"crop {i} must be a uint8 BGR image (H, W, 3), got {described}")
        if self.upload is not None:
            if not isinstance(self.upload, bytes | bytearray | memoryview):
                raise ValueError(f"upload must be bytes, got {type(self.upload).__name__}")
            check_upload_suffix(self.upload_suffix)
        elif self.upload_suffix:
            check_upload_suffix(self.upload_suffix)
        object.__setattr__(self, "n_faces", len(self.faces) if self.n_faces is None else int(self.n_faces))
        object.__setattr__(
            self, "n_frames", len(self.frames) if self.n_frames is None else int(self.n_frames)
        )

    @classmethod
    def from_prediction(
        cls,
        prediction: dict[str, Any],
        crops: list[np.ndarray],
        *,
        prediction_id: str,
        created_at: datetime,
        content_sha256: str,
        media_kind: str,
        client_key_id: str = "",
        model_version: str = "",
        model_alias: str = "",
        upload: bytes | None = None,
        upload_suffix: str = "",
        source: str = "service",
    ) -> PredictionRecord:
        """A record of `Prediction.to_dict(with_features=True)` and the prediction's face crops."""
        model = prediction.get("model") or {}
        quality = prediction.get("quality") or {}
        return cls(
            prediction_id=prediction_id,
            created_at=created_at,
            content_sha256=content_sha256,
            media_kind=media_kind,
            model_name=str(model.get("name", "")),
            weights_sha256=str(model.get("weights_sha256", "")),
            verdict=prediction["verdict"],
            probability=prediction.get("probability"),
            client_key_id=client_key_id,
            source=source,
            model_version=model_version,
            model_alias=model_alias,
            calibration=prediction.get("calibration", ""),
            reason=prediction.get("reason", ""),
            logit=prediction.get("logit"),
            appearance_logit=prediction.get("appearance_logit"),
            temporal_std=prediction.get("temporal_std"),
            flip_rate=prediction.get("flip_rate"),
            drift=prediction.get("drift"),
            threshold=prediction.get("threshold"),
            # The predictor may measure more than this schema stores; the test suite keeps them equal.
            quality={key: quality[key] for key in QUALITY_KEYS if key in quality},
            features=prediction.get("features"),
            faces=list(prediction.get("faces", [])),
            frames=list(prediction.get("frames", [])),
            seconds=dict(prediction.get("seconds", {})),
            crops=list(crops),
            upload=upload,
            upload_suffix=upload_suffix,
        )

    @property
    def stored_quality(self) -> dict[str, float | None]:
        """Every quality column, None where unmeasured (NaN or absent): SQL has NULL, not NaN."""
        values = {key: self.quality.get(key) for key in QUALITY_KEYS}
        return {key: None if v is None or math.isnan(float(v)) else float(v) for key, v in values.items()}
