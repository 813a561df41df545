"""Self-blended images (Shiohara & Yamasaki, CVPR 2022), made on the fly from real face crops.

A fake is the real crop with its inner face replaced by a slightly altered copy of itself: colour
shifted, blurred or sharpened, and shifted/scaled by a few pixels, blended in through a soft,
randomly deformed mask. What remains is exactly what face manipulations have in common (a blend
boundary, a colour and frequency mismatch, a small misalignment), without any one method's
fingerprint to memorise, which is why detectors trained on these generalise to unseen methods.

As in the paper, the colour and frequency change can go to the background instead of the pasted
face (`background_share` of the time): the real half of the pair is then the altered crop, and the
fake keeps the original inner face on that altered background. Otherwise every fake's inner face
differs from the training photo while its real never does, and with few people a detector can learn
"this face is not the one I memorised" instead of the blend, and then calls every new face fake.

Torch-free and fast (about 3 ms for a 224 px crop on one core), so it runs inside data loader
workers. The crop is an aligned face crop (uint8 HxWx3, BGR as everywhere in dfguard); without
landmarks, the alignment template's landmark positions locate the face, since alignment put it there.
The mask is `corpus.manipulate.face_oval_mask`, the one the demo corpus's manipulations use.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from dfguard.config import ExtractConfig
from dfguard.corpus.manipulate import face_oval_mask
from dfguard.faces.align import template_points
from dfguard.transforms import colour_jitter, gaussian_blur

# The paper's blend ratios: mostly full replacement, sometimes a partial (subtler) blend.
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


class SelfBlend(NamedTuple):
    image: np.ndarray  # uint8 HxWx3, the fake
    mask: np.ndarray  # float32 HxW in [0, 1], the weight of the pasted copy (0: pixel is the real's)
    real: np.ndarray  # uint8 HxWx3, the real half of the pair: the crop, or the crop altered as a whole


def _appearance_shift(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop with a colour shift and a frequency mismatch (blurred or sharpened)."""
    out = colour_jitter(crop, rng, brightness=0.1, contrast=0.1, saturation=0.15, hue_degrees=6.0)
    if rng.random() < 0.5:
        return gaussian_blur(out, rng.uniform(0.5, 1.3))
    return cv2.addWeighted(out, 1.5, gaussian_blur(out, 1.5), -0.5, 0)  # unsharp masking


def _misaligned(crop: np.ndarray, centre: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The crop scaled by up to 5% about `centre` and shifted by up to 3% of its size."""
    height, width = crop.shape[:2]
    warp = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), 0.0, rng.uniform(0.95, 1.05))
    warp[:, 2] += rng.uniform(-0.03, 0.03, size=2) * (width, height)
    return cv2.warpAffine(
        crop, warp, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )


def _pair_halves(
    crop: np.ndarray, rng: np.random.Generator, background_share: float
) -> tuple[np.ndarray, np.ndarray]:
    """(background, pasted face) before the misalignment: one of them carries the appearance shift.
    These are a blend's first draws, so a generator in the same state gives the same pair."""
    if not 0.0 <= background_share <= 1.0:
        raise ValueError(f"background_share must be within [0, 1], got {background_share}")
    # No draw when the share is 0, so a generator gives the same blends as before the option existed.
    to_background = background_share > 0.0 and rng.random() < background_share
    shifted = _appearance_shift(crop, rng)
    return (shifted, crop) if to_background else (crop, shifted)


def self_blend_real(crop: np.ndarray, rng: np.random.Generator, background_share: float) -> np.ndarray:
    """The real half of the pair `self_blend` makes from the same crop and generator state, without
    making the fake (the mask and the blend are most of a blend's cost)."""
    return _pair_halves(crop, rng, background_share)[0]


def self_blend(
    crop: np.ndarray,
    rng: np.random.Generator,
    landmarks: np.ndarray | None = None,
    margin: float = ExtractConfig.margin,
    background_share: float = 0.0,
) -> SelfBlend:
    """A self-blended fake of one real aligned face crop, and the real it pairs with.

    `landmarks`: optional 5 points (eyes, nose tip, mouth corners) in crop pixels; otherwise the
    template positions for a crop of `margin` face squares (the extraction contract's margin).
    `background_share`: how often the colour and frequency change goes to the background (and so to
    the real) instead of the pasted face.
    """
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 crop, got {crop.dtype} {crop.shape}")
    height, width = crop.shape[:2]
    if landmarks is None:
        points = template_points(1, margin) * (width, height)
    else:
        points = np.asarray(landmarks, np.float64).reshape(5, 2)
    background, pasted = _pair_halves(crop, rng, background_share)
    pasted = _misaligned(pasted, points.mean(axis=0), rng)
    mask = (face_oval_mask(points, (height, width), rng) * rng.choice(BLEND_RATIOS)).astype(np.float32)
    base = background.astype(np.float32)
    blended = base + mask[..., None] * (pasted.astype(np.float32) - base)
    return SelfBlend(np.clip(np.rint(blended), 0, 255).astype(np.uint8), mask, background)
