"""The streams `dfguard bench loop --shift KIND` sends through the service: what the loop is asked to
learn from a simulated reviewer's labels.

- `degrade`: the corpus's clips re-shared at low resolution (`loop.demo.shifted_stream`): known fakes
  whose evidence changed.
- `reshape`, `resynth`, `recolour`, `morph` (`corpus.novel`): kinds of fake the training never had,
  made by code that shares nothing with the corpus's manipulations, as photos. From every real clip
  of the corpus, two frames become real photos and two others fakes of the kind; a morph's second
  person is another person of the same side (pool or holdout), so the holdout's people are in no
  labelled item. Reals and fakes are saved alike (JPEG, quality 92), so the file format says nothing.

The holdout is the test split's people (never trained on, never labelled); the pool is everyone else.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from dfguard.corpus.novel import NOVEL_KINDS, morph
from dfguard.faces.detector import Face, FaceDetector
from dfguard.loop.demo import HOLDOUT_SPLIT, StreamItem, shifted_stream
from dfguard.media.video import write_video

SHIFTS = ("degrade", *NOVEL_KINDS, "morph")
REAL_AT, FAKE_AT = (0.2, 0.6), (0.4, 0.8)  # where in a clip its real and fake photos are taken
JPEG_QUALITY = 92
CLIP_CRF = 23  # the clips of a video stream, real and fake alike


def stream_for(
    shift: str,
    manifest_path: str | Path,
    dataset_dir: str | Path,
    out_dir: Path,
    progress: bool = True,
    media: str = "image",
) -> list[StreamItem]:
    """The items of `shift` (one of `SHIFTS`) as `media` (image or video), made under `out_dir` once
    (kept for later runs)."""
    if shift == "degrade":
        return shifted_stream(manifest_path, dataset_dir, out_dir, progress)
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; one of {', '.join(SHIFTS)}")
    if media == "video":
        return novel_clips(shift, manifest_path, dataset_dir, out_dir, progress)
    return novel_photos(shift, manifest_path, dataset_dir, out_dir, progress)


def novel_clips(
    kind: str, manifest_path: str | Path, dataset_dir: str | Path, out_dir: Path, progress: bool = True
) -> list[StreamItem]:
    """Every real clip of the corpus twice: as it is and as a fake of `kind`, each frame edited, both
    encoded alike (H.264, CRF `CLIP_CRF`), so the encoding says nothing. Only the kinds that edit a
    whole frame without landmarks (`resynth`): the others would need a face found in every frame."""
    if kind != "resynth":
        raise ValueError(f"--media video is made for resynth only, not {kind!r}")
    manifest = pd.read_parquet(manifest_path)
    reals = manifest[(manifest["media_kind"] == "video") & (manifest["label"] == "real")].sort_values(
        "video_id"
    )
    rng = np.random.default_rng(sum(map(ord, kind)))
    items: list[StreamItem] = []
    for row in tqdm(reals.itertuples(), total=len(reals), desc=f"{kind} clips", disable=not progress):
        for label in ("real", "fake"):
            target = out_dir / label / f"{row.video_id}.mp4"
            if not target.is_file():
                capture = cv2.VideoCapture(str(Path(dataset_dir) / row.path))
                frames = []
                while (read := capture.read())[0]:
                    frame = read[1]
                    frames.append(
                        NOVEL_KINDS[kind](frame, np.zeros((5, 2)), rng) if label == "fake" else frame
                    )
                capture.release()
                if not frames:
                    continue
                write_video(frames, target, round(row.fps), CLIP_CRF)
            kept = "real" if label == "real" else kind
            items.append(
                StreamItem(target, label, kept, row.split == HOLDOUT_SPLIT, str(row.target_identity))
            )
    return items


def _frame_at(path: Path, fraction: float) -> np.ndarray | None:
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.set(cv2.CAP_PROP_POS_FRAMES, max(0, min(count - 1, round(fraction * (count - 1)))))
        ok, frame = capture.read()
        return frame if ok else None
    finally:
        capture.release()


def novel_photos(
    kind: str, manifest_path: str | Path, dataset_dir: str | Path, out_dir: Path, progress: bool = True
) -> list[StreamItem]:
    """Real photos and fakes of `kind` from the corpus's real clips (see the module docstring)."""
    manifest = pd.read_parquet(manifest_path)
    reals = manifest[(manifest["media_kind"] == "video") & (manifest["label"] == "real")].sort_values(
        "video_id"
    )
    detector = FaceDetector(min_face_px=40, min_score=0.9)
    rng = np.random.default_rng(sum(map(ord, kind)))
    # One still per person with its landmarks: a morph's second person.
    donors: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
    for row in reals.itertuples():
        if row.target_identity in donors:
            continue
        frame = _frame_at(Path(dataset_dir) / row.path, 0.5)
        subject = _subject(detector.detect(frame), frame.shape) if frame is not None else None
        if subject is not None:
            donors[row.target_identity] = (frame, subject.landmarks, row.split == HOLDOUT_SPLIT)
    items: list[StreamItem] = []
    for row in tqdm(reals.itertuples(), total=len(reals), desc=f"{kind} photos", disable=not progress):
        holdout = row.split == HOLDOUT_SPLIT
        person = str(row.target_identity)
        for label, fractions in (("real", REAL_AT), ("fake", FAKE_AT)):
            for k, fraction in enumerate(fractions):
                target = out_dir / label / f"{row.video_id}-{k}.jpg"
                if not target.is_file():
                    frame = _frame_at(Path(dataset_dir) / row.path, fraction)
                    if frame is None:
                        continue
                    if label == "fake":
                        frame = _manipulated(kind, frame, detector, donors, person, holdout, rng)
                        if frame is None:
                            continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(target), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                items.append(StreamItem(target, label, "real" if label == "real" else kind, holdout, person))
    return items


def _manipulated(
    kind: str,
    frame: np.ndarray,
    detector: FaceDetector,
    donors: dict[str, tuple[np.ndarray, np.ndarray, bool]],
    person: str,
    holdout: bool,
    rng: np.random.Generator,
) -> np.ndarray | None:
    """The frame as a fake of `kind`, or None when no face is found to manipulate."""
    subject = _subject(detector.detect(frame), frame.shape)
    if subject is None:
        return None
    if kind != "morph":
        return NOVEL_KINDS[kind](frame, subject.landmarks, rng)
    others = [name for name, (_, _, side) in donors.items() if side == holdout and name != person]
    if not others:
        return None
    donor, donor_landmarks, _ = donors[others[int(rng.integers(len(others)))]]
    return morph(frame, subject.landmarks, donor, donor_landmarks, rng)


def _subject(faces: list[Face], shape: tuple[int, ...]) -> Face | None:
    """The face a corpus clip is about: the camera follows it, so of the faces at least half the
    largest one's height, the one nearest the frame's centre."""
    if not faces:
        return None
    tallest = max(face.height for face in faces)
    centre = np.array([shape[1] / 2, shape[0] / 2])
    candidates = [face for face in faces if face.height >= 0.5 * tallest]
    return min(candidates, key=lambda face: float(np.linalg.norm(face.landmarks.mean(axis=0) - centre)))
