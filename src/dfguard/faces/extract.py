"""Frames in, aligned faces and their metadata out: the one function training data and serving share.

`extract_faces` works on frames already in memory (an uploaded video, a webcam, a test); `extract_media`
reads a file's sampled frames first. Dataset-level work (many files, caching, writing) is elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfguard.faces.align import align_face
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.detector import Face, FaceDetector
from dfguard.faces.frames import read_sampled
from dfguard.faces.quality import FaceQuality, measure_quality
from dfguard.faces.tracks import assign_tracks

# Frame statuses, as the service reports them.
OK, NO_FACE, FACE_TOO_SMALL = "OK", "NO_FACE", "FACE_TOO_SMALL"
# Quarter turns tried when most frames show no face: sideways first (phone videos whose rotation
# flag was lost), then upside down.
ROTATIONS = (1, 3, 2)


@dataclass(frozen=True)
class ExtractedFace:
    frame_index: int
    timestamp_s: float
    track_id: int
    face: Face  # box and landmarks in the frame's pixels, as decoded
    face_px: float  # longest side of the box
    crop: np.ndarray  # aligned BGR crop, crop_size x crop_size
    quality: FaceQuality


@dataclass(frozen=True)
class FrameRecord:
    frame_index: int
    timestamp_s: float
    status: str  # OK, NO_FACE or FACE_TOO_SMALL
    faces: int  # faces kept (at least min_face_px)


@dataclass
class MediaFaces:
    frames: list[FrameRecord]
    faces: list[ExtractedFace]
    quarter_turns: int  # counter-clockwise quarter turns under which faces were found
    seconds: dict[str, float] = field(default_factory=dict)  # per stage, for throughput reports


@contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the time the block takes to `seconds[stage]`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


def build_detector(contract: PreprocessingContract, device: str = "") -> FaceDetector:
    """The detector a contract names, on `device` ("" for CUDA when present, else the CPU)."""
    return FaceDetector(
        min_face_px=contract.min_face_px,
        min_score=contract.min_score,
        device=device or None,
        detect_face_px=contract.detect_face_px,
        channels_last=True,
    )


def extract_media(
    path: Path, n_frames: int, detector: FaceDetector, contract: PreprocessingContract
) -> MediaFaces:
    """Sample `n_frames` frames of a video (one of an image) and extract their faces.

    Raises MediaError for a file that yields no frame.
    """
    seconds: dict[str, float] = {}
    with timed(seconds, "decode"):
        sampled = read_sampled(path, n_frames)
    result = extract_faces(sampled.frames, detector, contract, sampled.indices, sampled.timestamps_s)
    result.seconds.update(seconds)
    return result


def extract_faces(
    frames: list[np.ndarray],
    detector: FaceDetector,
    contract: PreprocessingContract,
    indices: list[int] | None = None,
    timestamps_s: list[float] | None = None,
) -> MediaFaces:
    """Detect, track, align and measure the faces in same-sized BGR frames of one video.

    `indices` and `timestamps_s` label the frames (default: 0, 1, ... and 0 s). Every face of at least
    `contract.min_face_px` is kept, each with the id of the person's track across the frames.
    """
    indices = list(range(len(frames))) if indices is None else indices
    timestamps_s = [0.0] * len(frames) if timestamps_s is None else timestamps_s
    seconds: dict[str, float] = {}
    with timed(seconds, "detect"):
        found, quarter_turns = _detect_oriented(frames, detector, contract)
        kept = [[face for face in faces if _face_px(face) >= contract.min_face_px] for faces in found]
        too_small = _too_small(frames, kept, quarter_turns, detector, contract)
    records, extracted = [], []
    with timed(seconds, "align"):
        for frame, index, stamp, frame_kept, small, track_ids in zip(
            frames, indices, timestamps_s, kept, too_small, assign_tracks(kept), strict=True
        ):
            status = OK if frame_kept else FACE_TOO_SMALL if small else NO_FACE
            records.append(FrameRecord(index, stamp, status, len(frame_kept)))
            for face, track_id in zip(frame_kept, track_ids, strict=True):
                crop, _ = align_face(frame, face.landmarks, contract.crop_size, contract.margin)
                quality = measure_quality(frame, face.box, crop)
                extracted.append(ExtractedFace(index, stamp, track_id, face, _face_px(face), crop, quality))
    return MediaFaces(records, extracted, quarter_turns, seconds)


def _face_px(face: Face) -> float:
    # The longest side, so the size of a face does not depend on the frame's orientation.
    return max(face.width, face.height)


def _turned(frames: list[np.ndarray], turns: int) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.rot90(frame, turns)) for frame in frames] if turns else frames


def _detect_oriented(
    frames: list[np.ndarray], detector: FaceDetector, contract: PreprocessingContract
) -> tuple[list[list[Face]], int]:
    """Faces in every frame, in the frames' own coordinates, and the quarter turns that found them.

    Upright first. If fewer than half of the frames show a face and the contract allows it, the frames
    are turned by quarter turns and the turn showing faces in the most frames wins; its faces are
    mapped back, so alignment (which follows the landmarks) still makes them upright.
    """
    found = detector.detect_batch(frames)
    best_turns, best_hits = 0, sum(bool(faces) for faces in found)
    if not contract.orientation_search or best_hits * 2 >= len(frames):
        return found, 0
    height, width = frames[0].shape[:2]
    for turns in ROTATIONS:
        turned = detector.detect_batch(_turned(frames, turns))
        hits = sum(bool(faces) for faces in turned)
        if hits > best_hits:
            found = [[_unturn(face, turns, width, height) for face in faces] for faces in turned]
            best_turns, best_hits = turns, hits
    return found, best_turns


def _too_small(
    frames: list[np.ndarray],
    kept: list[list[Face]],
    turns: int,
    detector: FaceDetector,
    contract: PreprocessingContract,
) -> list[bool]:
    """Whether each frame without a kept face shows a face of at least `search_face_px`.

    Searching small faces costs several times more (the image pyramid grows with the inverse square
    of the smallest face), so only frames that kept no face pay for it; a small face beside a kept
    one would not be kept anyway.
    """
    empty = [i for i, faces in enumerate(kept) if not faces]
    if not empty or contract.search_face_px >= contract.min_face_px:
        return [False] * len(frames)
    found = detector.detect_batch(_turned([frames[i] for i in empty], turns), contract.search_face_px)
    small = dict(zip(empty, (bool(faces) for faces in found), strict=True))
    return [small.get(i, False) for i in range(len(frames))]


def _unturn(face: Face, turns: int, width: int, height: int) -> Face:
    """Map a face found in a frame turned `turns` quarter turns counter-clockwise (np.rot90) back."""

    def back(points: np.ndarray) -> np.ndarray:
        x, y = points[:, 0], points[:, 1]
        if turns == 1:
            return np.stack([width - 1 - y, x], axis=1)
        if turns == 2:
            return np.stack([width - 1 - x, height - 1 - y], axis=1)
        return np.stack([y, height - 1 - x], axis=1)

    corners = back(face.box.reshape(2, 2))
    box = np.concatenate([corners.min(axis=0), corners.max(axis=0)]).astype(np.float32)
    return Face(box, back(face.landmarks).astype(np.float32), face.score)
