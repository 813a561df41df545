"""Kinds of fake the demo corpus never has: what the loop benchmark (`dfguard bench loop --shift`) asks
the loop to learn from reviewers' labels. Written apart from `manipulate.py` on purpose: none of them
shares its face-swap or self-blend code, mask or colour transfer, so a detector trained on the corpus
has not seen their traces.

- `morph`: a morph of two people (the face-morphing attack on identity documents): the second
  person's head aligned to the first's landmarks and cross-dissolved with it over the whole head,
  faded out far outside the face. Both identities are in the result; there is no face-sized seam.
- `resynth`: the whole picture re-rendered as a generator's decoder does: detail removed at half
  resolution, then brought back by a stride-2 transposed convolution with an uneven kernel (the
  checkerboard spectrum of GAN and diffusion decoders, Odena et al. 2016; Frank et al. 2020) and an
  edge-preserving smoothing of skin. Nothing is blended: every pixel is the generator's.
"""

from __future__ import annotations

import cv2
import numpy as np

from dfguard.corpus.manipulate import LEFT_EYE, RIGHT_EYE

NOVEL_KINDS = ("morph", "resynth")


def _head_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A soft mask over the whole head: 1 over a disc of 1.8 eye distances around the face's
    centre, fading over as much again, so no edge lies near the face."""
    eye_dist = float(np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE]))
    centre = landmarks.mean(axis=0)
    grid_y, grid_x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    distance = np.hypot(grid_x - centre[0], grid_y - centre[1]) / max(eye_dist, 1.0)
    return np.clip((3.6 - distance) / 1.8, 0.0, 1.0)


def morph(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    donor: np.ndarray,
    donor_landmarks: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A morph of the target person and the donor (uint8 BGR frames, 5 landmarks each), weight
    0.4-0.6 on the donor."""
    matrix, _ = cv2.estimateAffinePartial2D(donor_landmarks, target_landmarks, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("landmarks do not define a similarity transform")
    height, width = target.shape[:2]
    aligned = cv2.warpAffine(
        donor, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101
    )
    weight = rng.uniform(0.4, 0.6) * _head_mask(target_landmarks, (height, width))[..., None]
    mixed = target.astype(np.float32) * (1.0 - weight) + aligned.astype(np.float32) * weight
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def resynth(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image re-rendered through a half-resolution bottleneck and a transposed-convolution
    upsampler (uint8 BGR in and out, same size)."""
    height, width = image.shape[:2]
    smooth = cv2.bilateralFilter(image, 7, rng.uniform(20, 40), 5)
    small = cv2.resize(smooth, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)
    # Stride-2 transposed convolution: zeros between the pixels, then a 4x4 kernel whose taps do not
    # cover the four phases evenly (the uneven overlap is the checkerboard).
    upsampled = np.zeros((small.shape[0] * 2, small.shape[1] * 2, 3), np.float32)
    upsampled[::2, ::2] = small
    taps = np.array([0.75, 1.0, 1.0, 0.9], np.float32) * rng.uniform(0.95, 1.05, 4).astype(np.float32)
    kernel = np.outer(taps, taps)
    kernel *= 4.0 / kernel.sum()
    rendered = cv2.filter2D(upsampled, -1, kernel, borderType=cv2.BORDER_REFLECT101)
    rendered = cv2.resize(rendered, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.clip(rendered + 0.5, 0, 255).astype(np.uint8)
