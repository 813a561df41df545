"""One upload in, one answer out: what `/detect`, `/detect/batch` and the async jobs share.

An upload is named by its bytes: the kind (image or video) and the decoder come from its opening bytes
(`media.sniffed_suffix`), never from the client's file name or MIME type, and the file is written under
a name of the service's own. What cannot be judged gets a status (`UNSUPPORTED`, `TOO_LARGE`,
`UNREADABLE`, and the predictor's `NO_FACE`, `FACE_TOO_SMALL`, `TOO_SHORT`) in the same shape as a
verdict, so a batch answers every file, and each answer becomes one row of the prediction store.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2

from dfguard.config import ServeConfig
from dfguard.feedback import PredictionRecord
from dfguard.inference.predictor import UNREADABLE, Prediction
from dfguard.inference.report import explanations
from dfguard.media import IMAGE_EXTENSIONS, sniffed_suffix
from dfguard.serving.models import ServedModel
from dfguard.serving.security import MB, size_cap_for

UNSUPPORTED, TOO_LARGE = "UNSUPPORTED", "TOO_LARGE"


@dataclass(frozen=True)
class Upload:
    data: bytes
    sha256: str
    suffix: str | None  # from the content; None when it is no supported media
    kind: str | None  # "image" or "video"

    @classmethod
    def of(cls, data: bytes) -> Upload:
        suffix = sniffed_suffix(data[:16])
        kind = None if suffix is None else "image" if suffix in IMAGE_EXTENSIONS else "video"
        return cls(data, hashlib.sha256(data).hexdigest(), suffix, kind)


@dataclass
class Judgement:
    """An answer, and what the store keeps of it."""

    answer: dict[str, Any]
    prediction: Prediction
    upload: Upload


def judge_file(served: ServedModel, path: Path, cfg: ServeConfig, explain: bool = False) -> Judgement:
    """Judge one uploaded file with `served` (taken once by the caller, so the whole answer is one
    model's). Reads no more than the largest cap allows: what is over it is refused unread."""
    cap = max(size_cap_for("image", cfg), size_cap_for("video", cfg))
    with path.open("rb") as handle:
        data = handle.read(cap + 1)
    if len(data) > cap:
        prediction = served.predictor.status_of(TOO_LARGE, f"over {cap // MB} MB")
        return _answer(served, prediction, Upload(b"", "", None, None), explain, time.perf_counter())
    return judge(served, Upload.of(data), cfg, explain)


def judge(served: ServedModel, upload: Upload, cfg: ServeConfig, explain: bool = False) -> Judgement:
    """Judge one upload's bytes with `served`."""
    started = time.perf_counter()
    predictor = served.predictor
    if not upload.data:
        prediction = predictor.status_of(UNREADABLE, "empty upload")
    elif upload.suffix is None:
        reason = "the content is neither a supported image nor a video (whatever its name says)"
        prediction = predictor.status_of(UNSUPPORTED, reason)
    elif len(upload.data) > (cap := size_cap_for(upload.kind, cfg)):
        reason = f"{upload.kind} of {len(upload.data) / MB:.1f} MB; at most {cap / MB:g} MB"
        prediction = predictor.status_of(TOO_LARGE, reason)
    else:
        prediction = predictor.predict_bytes(upload.data, "upload" + upload.suffix)
    return _answer(served, prediction, upload, explain, started)


def _answer(
    served: ServedModel, prediction: Prediction, upload: Upload, explain: bool, started: float
) -> Judgement:
    answer = {
        "prediction_id": uuid.uuid4().hex,
        "created_at": datetime.now(UTC).isoformat(),
        **prediction.to_dict(),
        "media": {"kind": upload.kind, "sha256": upload.sha256, "bytes": len(upload.data)},
        "model": served.label,
    }
    if explain and prediction.judged:
        answer["explanations"] = [
            {
                "frame_index": shown.face.frame_index,
                "track_id": shown.face.track_id,
                "probability": shown.face.probability,
                "evidence_for": shown.side,
                "png_base64": base64.b64encode(cv2.imencode(".png", shown.image)[1].tobytes()).decode(),
            }
            for shown in explanations(prediction, served.predictor)
        ]
    answer["seconds"] = {**answer["seconds"], "total": round(time.perf_counter() - started, 4)}
    return Judgement(answer, prediction, upload)


def store_record(
    judgement: Judgement, served: ServedModel, key_id: str, keep_upload: bool
) -> PredictionRecord:
    """The prediction store's row of an answer, with its face crops and (when kept) the upload."""
    upload, answer = judgement.upload, judgement.answer
    return PredictionRecord.from_prediction(
        judgement.prediction.to_dict(with_features=True),
        judgement.prediction.crops,
        prediction_id=answer["prediction_id"],
        created_at=datetime.fromisoformat(answer["created_at"]),
        client_key_id=key_id,
        content_sha256=upload.sha256,
        media_kind=upload.kind or "",
        model_version=served.version,
        model_alias=served.alias,
        upload=upload.data if keep_upload and upload.data and upload.suffix else None,
        upload_suffix=upload.suffix or "",
    )
