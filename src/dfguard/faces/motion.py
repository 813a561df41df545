"""Motion evidence: does the inner face move on its own, against the head around it?

Face-swap pipelines detect, align and paste the face anew in every frame, so the pasted face wobbles
and drifts by fractions of a pixel to a few pixels against the forehead, hair and jaw it is pasted
into, which move with the head (the temporal incoherence FTCN and LipForensics exploit). `face_drift`
measures that on a track's aligned crops: each later crop is registered to the track's first one with
ECC (Evangelidis & Psarakis 2008), an affine fit on a ring around the face; what shift of the inner face
is left after undoing that fit is the drift. Only pixels inside the video frame in both crops count (a
face at the frame's edge has black borders that move with the camera, not with the head). The drift
carries no appearance and so no identity: it does not care whose face it is.

The calibration fuses it with the detector's logit (`calibration.fusion`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from dfguard.faces.tracks import ordered_tracks

# Regions as fractions of the aligned crop's side (margin 1.3: the face square spans 0.115-0.885).
# Chosen on the training split among the crop's outer rim, this ring, and consecutive frames as
# references: the ring is the head just around the face, which moves with the face in a real clip.
INNER = (0.30, 0.70)
RING = (0.12, 0.25)
# A pair is measured only when this share of both regions lies inside the frame in both crops: where the
# frame's edge cuts the ring, it moves with the camera and ECC follows it (on the training split, faces
# cut by the edge were all of the real tracks that drifted more than 0.45 px; at 0.95 none drifts more).
MIN_INSIDE = 0.95
# Later crops registered per track: evenly spread, so drift over the whole clip is seen.
MAX_PAIRS = 8
_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5)


def _masks(size: int) -> tuple[np.ndarray, np.ndarray]:
    def square(low: float) -> tuple[slice, slice]:
        lo, hi = round(low * size), round((1 - low) * size)
        return slice(lo, hi), slice(lo, hi)

    inner = np.zeros((size, size), np.uint8)
    inner[square(INNER[0])] = 1
    ring = np.zeros((size, size), np.uint8)
    ring[square(RING[0])] = 1
    ring[square(RING[1])] = 0
    return inner, ring


def _inside(crop: np.ndarray) -> np.ndarray:
    """Pixels of a crop inside the video frame: alignment fills the rest with black. Eroded, so that
    the interpolated edge of the frame counts as outside too."""
    seen = (crop.max(axis=2) if crop.ndim == 3 else crop) > 0
    return cv2.erode(seen.astype(np.uint8), np.ones((7, 7), np.uint8))


def _grey(crop: np.ndarray) -> np.ndarray:
    # A light blur keeps ECC's gradients from following sensor noise and compression blocks.
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)


def face_drift(crops: Sequence[np.ndarray]) -> float | None:
    """Mean drift, in crop pixels, of the inner face against the ring around it, over up to `MAX_PAIRS`
    later crops of one track (square aligned crops in frame order); None with fewer than two crops
    or when no pair could be registered (a blank or uniform crop, a face the frame's edge cuts into)."""
    if len(crops) < 2:
        return None
    size = crops[0].shape[0]
    inner, ring = _masks(size)
    reference, reference_inside = _grey(crops[0]), _inside(crops[0])
    drifts = []
    for index in spread(len(crops))[1:]:
        inside = reference_inside & _inside(crops[index])
        inner_seen, ring_seen = inner & inside, ring & inside
        if ring_seen.sum() < MIN_INSIDE * ring.sum() or inner_seen.sum() < MIN_INSIDE * inner.sum():
            continue
        moved = _grey(crops[index])
        try:
            _, around = cv2.findTransformECC(
                reference, moved, np.eye(2, 3, dtype=np.float32), cv2.MOTION_AFFINE, _CRITERIA, ring_seen, 1
            )
            # Undo the head's motion, then find the face's own: a shift (two unknowns) stays well posed
            # on a smooth, blurred face where a second affine fit (six) wanders.
            undone = cv2.warpAffine(
                moved, around, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
            )
            _, shift = cv2.findTransformECC(
                reference,
                undone,
                np.eye(2, 3, dtype=np.float32),
                cv2.MOTION_TRANSLATION,
                _CRITERIA,
                inner_seen,
                1,
            )
        except cv2.error:  # no convergence: a flat crop gives ECC nothing to align
            continue
        drifts.append(float(np.hypot(*shift[:, 2])))
    return float(np.mean(drifts)) if drifts else None


def video_drift(faces: pd.DataFrame, read: Callable[[int], np.ndarray], progress: str = "") -> pd.Series:
    """Per video_id, the largest drift of its face tracks (a swap in a crowd is one track). `faces`
    has the columns `ordered_tracks` reads; `read(i)` gives the crop of the row at position i. Videos
    with no measurable track get NaN. `progress` labels a progress bar over the tracks (none when
    empty)."""
    drift: dict[object, float] = {}
    tracks = list(ordered_tracks(faces))
    for video, ordered in tqdm(tracks, desc=progress, unit="track", disable=not progress):
        picked = ordered[spread(len(ordered))]
        value = face_drift([read(int(i)) for i in picked])
        drift.setdefault(video, np.nan)
        if value is not None:
            drift[video] = np.fmax(drift[video], value)  # fmax: a NaN so far gives way to a value
    return pd.Series(drift, name="drift", dtype=np.float64).rename_axis("video_id")


def spread(n: int) -> np.ndarray:
    """Indices of the faces of a track of n that `face_drift` registers: the first, and up to
    `MAX_PAIRS` later ones evenly spread to the last."""
    if n <= MAX_PAIRS + 1:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, MAX_PAIRS + 1).round().astype(int))
