"""Quality metadata of one face: sharpness, brightness and two measures of compression.

Sharpness and brightness are measured on the aligned crop, so faces of every size and pose are
compared at the same scale (an upscaled small face is blurrier, which is what a model sees too).
Compression is measured on the face box in the frame as decoded, because JPEG's 8x8 block grid only
exists in the frame's own pixel grid; alignment resamples it away.

JPEG quality, estimated from the DCT quantisation left in the pixels: JPEG rounds each 8x8 block's
DCT coefficients to multiples of a per-frequency step (its quantisation table), so after decoding the
coefficients of one frequency cluster at multiples of that step. For a few low frequencies the step is
estimated as the one whose multiples the non-zero coefficients sit closest to, and turned into an IJG
quality (libjpeg's quality scaling of its standard luminance table); the median over frequencies is
reported. It is NaN where no quantisation shows: never JPEG-compressed (PNG, or video codecs such as
H.264, whose blocks are predicted and deblocked), resampled after compression, quality above ~88
(steps of 1-2 drown in rounding noise), or a region too small or too flat to have enough non-zero
coefficients. On libjpeg output it is within 1 of the true quality from 20 to 88.

Blockiness works on any frame: the mean luma step across 8-pixel block boundaries over the mean step
inside blocks. About 1.0-1.1 for clean frames and H.264 (its deblocking filter smooths block edges),
1.3 for JPEG quality 90 and above 2 for quality 30.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import cv2
import numpy as np

BLOCK = 8
# libjpeg's standard luminance quantisation table (quality 50).
IJG_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.float64,
)
# Low frequencies: coarse enough to be found at every quality, frequent enough to be counted.
FREQUENCIES = ((0, 1), (1, 0), (1, 1), (0, 2), (2, 0), (1, 2), (2, 1))
MAX_STEP = 100
MIN_COEFFICIENTS = 16  # fewer non-zero coefficients than this say nothing about a step
MAX_LATTICE_ERROR = 0.1  # mean distance to the nearest multiple, in steps (0.25 for no lattice)
MIN_BLOCKS = 4  # per side


def _dct_matrix() -> np.ndarray:
    k = np.arange(BLOCK)
    matrix = np.sqrt(2 / BLOCK) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * BLOCK))
    matrix[0] /= np.sqrt(2)
    return matrix  # orthonormal DCT-II, which is JPEG's forward DCT


DCT = _dct_matrix()


@dataclass(frozen=True)
class FaceQuality:
    sharpness: float  # variance of the Laplacian of the aligned crop's grey levels
    brightness: float  # mean grey level of the aligned crop, 0-255
    jpeg_quality: float  # IJG quality estimate from DCT quantisation, NaN where none shows
    blockiness: float  # block-boundary over in-block luma steps; 1 = no visible 8x8 grid


QUALITY_MEASURES = tuple(f.name for f in fields(FaceQuality))


def measure_quality(frame_bgr: np.ndarray, box: np.ndarray, crop_bgr: np.ndarray) -> FaceQuality:
    grey = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY)
    luma = _grid_region(frame_bgr, box)
    return FaceQuality(
        sharpness=float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        brightness=float(grey.mean()),
        jpeg_quality=jpeg_quality(luma) if luma is not None else float("nan"),
        blockiness=blockiness(luma) if luma is not None else float("nan"),
    )


def _grid_region(frame_bgr: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The luma of the box, widened to whole 8x8 blocks of the frame's grid; None if too small."""
    height, width = frame_bgr.shape[:2]
    x1 = max(0, int(box[0]) // BLOCK * BLOCK)
    y1 = max(0, int(box[1]) // BLOCK * BLOCK)
    x2 = min(width // BLOCK * BLOCK, -(-int(np.ceil(box[2])) // BLOCK) * BLOCK)
    y2 = min(height // BLOCK * BLOCK, -(-int(np.ceil(box[3])) // BLOCK) * BLOCK)
    if x2 - x1 < MIN_BLOCKS * BLOCK or y2 - y1 < MIN_BLOCKS * BLOCK:
        return None
    # JPEG's luma (BT.601, full range), which is what OpenCV's YCrCb conversion computes.
    return cv2.cvtColor(frame_bgr[y1:y2, x1:x2], cv2.COLOR_BGR2YCrCb)[..., 0].astype(np.float64)


def jpeg_quality(luma: np.ndarray) -> float:
    """IJG quality estimate of grid-aligned luma whose sides are multiples of 8 (see module doc)."""
    rows, cols = luma.shape[0] // BLOCK, luma.shape[1] // BLOCK
    blocks = luma.reshape(rows, BLOCK, cols, BLOCK).transpose(0, 2, 1, 3).reshape(-1, BLOCK, BLOCK) - 128.0
    us, vs = np.array(FREQUENCIES).T
    # Only the coefficients used: row frequencies u, then column frequencies v, of every block.
    coefficients = np.einsum("fj,njk,fk->fn", DCT[us], blocks, DCT[vs])
    steps = _quantisation_steps(coefficients)
    found = steps > 1
    # Steps found at fewer than half the frequencies are chance fits, not a quantisation table.
    if found.sum() * 2 < len(FREQUENCIES):
        return float("nan")
    scaling = 100.0 * steps[found] / IJG_LUMA[us[found], vs[found]]  # libjpeg: step = table * scaling / 100
    qualities = np.where(scaling <= 100, (200.0 - scaling) / 2, 5000.0 / scaling)
    return float(np.clip(np.median(qualities), 1, 100))


def _quantisation_steps(coefficients: np.ndarray) -> np.ndarray:
    """Per row of coefficients, the step whose multiples its non-zero values sit closest to; 1 if none.

    The true step fits best: its divisors fit too, but with rounding noise that is larger relative
    to the step, its multiples miss every other value, and a chance fit of an unrelated large step
    rests on few values and fits loosely.
    """
    steps = np.arange(2, MAX_STEP + 1, dtype=np.float64)[None, :, None]
    values = coefficients[:, None, :]
    # Values rounded to zero fit every step; only the others show the lattice.
    kept = np.abs(values) >= 0.75 * steps
    ratio = values / steps
    counts = kept.sum(axis=2)
    error = (np.abs(ratio - np.round(ratio)) * kept).sum(axis=2) / np.maximum(counts, 1)
    error[counts < MIN_COEFFICIENTS] = np.inf
    best = error.argmin(axis=1)
    fits = error[np.arange(len(best)), best] < MAX_LATTICE_ERROR
    return np.where(fits, best + 2, 1)


def blockiness(luma: np.ndarray) -> float:
    """Mean absolute luma step across 8-pixel block boundaries over the mean step inside blocks."""
    steps_x = np.abs(np.diff(luma, axis=1))
    steps_y = np.abs(np.diff(luma, axis=0))
    boundary = np.concatenate(
        [steps_x[:, BLOCK - 1 :: BLOCK].ravel(), steps_y[BLOCK - 1 :: BLOCK, :].ravel()]
    )
    inside = np.concatenate(
        [
            np.delete(steps_x, np.s_[BLOCK - 1 :: BLOCK], axis=1).ravel(),
            np.delete(steps_y, np.s_[BLOCK - 1 :: BLOCK], axis=0).ravel(),
        ]
    )
    return float(boundary.mean() / max(float(inside.mean()), 1e-6))
