"""Kinds of fake the demo corpus never has: what the loop benchmark (`dfguard bench loop --shift`) asks
the loop to learn from reviewers' labels. Written apart from `manipulate.py` on purpose: none of them
shares its face-swap or self-blend code, mask or colour transfer, so a detector trained on the corpus
has not seen their traces.

- `reshape`: the face's geometry edited as beautifying apps and warp-based puppeteering do (eyes
  enlarged, cheeks drawn in, mouth corners lifted) by one smooth displacement field. Not a blend:
  every pixel is the same photo's, moved.
- `resynth`: the whole picture re-rendered as a generator's decoder does: detail removed at half
  resolution, then brought back by a stride-2 transposed convolution with a slightly uneven kernel
  (the checkerboard spectrum of GAN and diffusion decoders, Odena et al. 2016; Frank et al. 2020)
  after an edge-preserving smoothing of skin. Nothing is blended: every pixel is the generator's.
- `recolour`: facial attributes edited (lips and eyes recoloured under small soft masks).
- `morph`: a morph of two people (the face-morphing attack on identity documents): the second
  person's face aligned to the first's landmarks, matched in colour and cross-dissolved with it over
  the inner head. Both identities are in the result.

Each takes a uint8 BGR frame, the 5 landmarks of the face to manipulate and a generator (`morph` also
the second person's frame and landmarks).
"""

from __future__ import annotations

import cv2
import numpy as np

from dfguard.corpus.manipulate import LEFT_EYE, RIGHT_EYE


def _head_mask(landmarks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A soft mask over the inner head: 1 over a disc of 1.2 eye distances around the face's centre,
    fading to 0 at 2.4, so no edge lies anywhere near the face's outline."""
    eye_dist = float(np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE]))
    centre = landmarks.mean(axis=0)
    grid_y, grid_x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    distance = np.hypot(grid_x - centre[0], grid_y - centre[1]) / max(eye_dist, 1.0)
    return np.clip((2.4 - distance) / 1.2, 0.0, 1.0)


def morph(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    donor: np.ndarray,
    donor_landmarks: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A morph of the target person and the donor (uint8 BGR frames, 5 landmarks each), weight
    0.35-0.5 on the donor."""
    matrix, _ = cv2.estimateAffinePartial2D(donor_landmarks, target_landmarks, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("landmarks do not define a similarity transform")
    height, width = target.shape[:2]
    aligned = cv2.warpAffine(
        donor, matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101
    )
    mask = _head_mask(target_landmarks, (height, width))
    # The second person's skin tone brought to the first's over the face, as morphing tools do.
    inside = mask > 0.5
    source, goal = aligned.astype(np.float32), target.astype(np.float32)
    source = (source - source[inside].mean(0)) / (source[inside].std(0) + 1e-3) * goal[inside].std(0) + goal[
        inside
    ].mean(0)
    weight = rng.uniform(0.35, 0.5) * mask[..., None]
    mixed = goal * (1.0 - weight) + source * weight
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def resynth(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image re-rendered through a half-resolution bottleneck and a transposed-convolution
    upsampler (uint8 BGR in and out, same size); `landmarks` are not needed (the whole picture is
    generated) and accepted so that every kind is called alike."""
    height, width = image.shape[:2]
    smooth = cv2.bilateralFilter(image, 7, rng.uniform(20, 40), 5)
    small = cv2.resize(smooth, (max(1, width // 2), max(1, height // 2)), interpolation=cv2.INTER_AREA)
    # Stride-2 transposed convolution: zeros between the pixels, then a 4x4 kernel whose taps do not
    # cover the four phases evenly (the uneven overlap is the checkerboard).
    upsampled = np.zeros((small.shape[0] * 2, small.shape[1] * 2, 3), np.float32)
    upsampled[::2, ::2] = small
    taps = np.array([0.9, 1.0, 1.0, 0.95], np.float32) * rng.uniform(0.95, 1.05, 4).astype(np.float32)
    kernel = np.outer(taps, taps)
    kernel *= 4.0 / kernel.sum()
    rendered = cv2.filter2D(upsampled, -1, kernel, borderType=cv2.BORDER_REFLECT101)
    rendered = cv2.resize(rendered, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.clip(rendered + 0.5, 0, 255).astype(np.uint8)


def reshape(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The face reshaped as beautifying and puppeteering edits do: eyes enlarged, cheeks drawn in,
    mouth corners lifted, by one smooth displacement field (no pixel from elsewhere, no seam)."""
    height, width = image.shape[:2]
    eye_dist = float(np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE]))
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    dx, dy = np.zeros_like(grid_x), np.zeros_like(grid_y)

    def bump(centre: np.ndarray, radius: float) -> np.ndarray:
        return np.exp(-((grid_x - centre[0]) ** 2 + (grid_y - centre[1]) ** 2) / (2 * radius**2))

    grow = rng.uniform(0.12, 0.22)
    for eye in (landmarks[LEFT_EYE], landmarks[RIGHT_EYE]):  # sample closer to the eye: it grows
        weight = bump(eye, 0.28 * eye_dist) * grow
        dx -= weight * (grid_x - eye[0])
        dy -= weight * (grid_y - eye[1])
    centre = landmarks.mean(axis=0)
    slim = rng.uniform(0.06, 0.12)
    for side in (-1.0, 1.0):  # cheeks: sample further out, the face narrows
        cheek = centre + np.array([side * 0.85 * eye_dist, 0.35 * eye_dist])
        weight = bump(cheek, 0.45 * eye_dist) * slim * eye_dist
        dx += weight * side
    lift = rng.uniform(0.04, 0.08) * eye_dist
    for corner in (landmarks[3], landmarks[4]):  # mouth corners: sample lower, they rise
        dy += bump(corner, 0.22 * eye_dist) * lift
    return cv2.remap(image, grid_x + dx, grid_y + dy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT101)


def recolour(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Facial attributes edited as attribute-editing generators do: lips and eyes recoloured (a hue
    and saturation change under small soft masks round the mouth and each eye), the rest untouched."""
    height, width = image.shape[:2]
    eye_dist = float(np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE]))
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)

    def spot(centre: np.ndarray, rx: float, ry: float) -> np.ndarray:
        return np.exp(-(((grid_x - centre[0]) / rx) ** 2 + ((grid_y - centre[1]) / ry) ** 2))

    mouth = (landmarks[3] + landmarks[4]) / 2
    mouth_width = float(np.linalg.norm(landmarks[4] - landmarks[3]))
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV).astype(np.float32)
    lips = spot(mouth, 0.55 * mouth_width, 0.25 * mouth_width)
    eyes = spot(landmarks[LEFT_EYE], 0.14 * eye_dist, 0.09 * eye_dist) + spot(
        landmarks[RIGHT_EYE], 0.14 * eye_dist, 0.09 * eye_dist
    )
    for mask, hue, saturation in (
        (lips, rng.uniform(-12, 12), rng.uniform(1.2, 1.5)),
        (eyes, rng.uniform(40, 80), 1.4),
    ):
        hsv[..., 0] = (hsv[..., 0] + mask * hue) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] * (1 + mask * (saturation - 1)), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)


# The kinds made from one face: name -> function (`morph` needs two people and is called on its own).
NOVEL_KINDS = {"reshape": reshape, "resynth": resynth, "recolour": recolour}
