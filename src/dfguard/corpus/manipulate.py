"""The two manipulations of the demo corpus, computed once per clip on a still of the target face.

Each returns a face layer and a soft alpha mask in the still's coordinates; the renderer warps both
with the camera motion of every frame (plus per-frame alignment jitter, as real face-swap pipelines
have) and composites them over the real frame. So a fake clip differs from its target clip only inside
the blended face region, as in FaceForensics++.
"""

from __future__ import annotations

import cv2
import numpy as np

LEFT_EYE, RIGHT_EYE, NOSE, MOUTH_LEFT, MOUTH_RIGHT = range(5)


def face_oval_mask(landmarks: np.ndarray, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A soft mask over the inner face (brows to chin), built from the 5 landmarks.

    Five points give no jaw line, so the oval is derived from face proportions: it spans about 1.3
    eye-to-mouth distances above and below the face's middle and one eye distance to each side, and is
    randomly deformed so that no two fakes share a boundary the detector could memorise.
    """
    eye_centre = landmarks[[LEFT_EYE, RIGHT_EYE]].mean(axis=0)
    mouth_centre = landmarks[[MOUTH_LEFT, MOUTH_RIGHT]].mean(axis=0)
    eye_dist = float(np.linalg.norm(landmarks[RIGHT_EYE] - landmarks[LEFT_EYE]))
    down = mouth_centre - eye_centre
    eye_to_mouth = float(np.linalg.norm(down))
    centre = eye_centre + 0.45 * down
    half_height = 1.3 * eye_to_mouth * rng.uniform(0.92, 1.05)
    half_width = 0.95 * eye_dist * rng.uniform(0.9, 1.05)
    angle = float(np.degrees(np.arctan2(down[0], down[1])))
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(
        mask,
        (round(centre[0]), round(centre[1])),
        (max(round(half_width), 2), max(round(half_height), 2)),
        -angle,
        0,
        360,
        255,
        thickness=-1,
    )
    # An elastic wobble of the boundary: shift pixels by a smooth random field a few pixels wide.
    amplitude = 0.04 * eye_dist
    field = rng.normal(size=(2, 6, 6)).astype(np.float32)
    fx, fy = (cv2.resize(f, shape[::-1], interpolation=cv2.INTER_CUBIC) * amplitude for f in field)
    grid_x, grid_y = np.meshgrid(np.arange(shape[1], dtype=np.float32), np.arange(shape[0], dtype=np.float32))
    mask = cv2.remap(mask, grid_x + fx, grid_y + fy, cv2.INTER_LINEAR)
    blur = int(0.25 * eye_dist) | 1
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (blur, blur), 0)
    return np.clip(soft, 0.0, 1.0)  # the blur's rounding can overshoot 1 by a few ulps


def colour_transfer(source: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Match `source`'s colour statistics to `target`'s inside `mask` (Reinhard transfer in Lab)."""
    inside = mask > 0.5
    src_lab = cv2.cvtColor(source, cv2.COLOR_BGR2LAB).astype(np.float32)
    tgt_lab = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
    src_mean, src_std = src_lab[inside].mean(axis=0), src_lab[inside].std(axis=0) + 1e-3
    tgt_mean, tgt_std = tgt_lab[inside].mean(axis=0), tgt_lab[inside].std(axis=0) + 1e-3
    matched = (src_lab - src_mean) * (tgt_std / src_std) + tgt_mean
    return cv2.cvtColor(np.clip(matched, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def face_swap(
    target: np.ndarray,
    target_landmarks: np.ndarray,
    source: np.ndarray,
    source_landmarks: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste the source person's face onto the target: landmark alignment (similarity transform),
    colour correction, a deformed blurred mask and Poisson (seamless) cloning."""
    height, width = target.shape[:2]
    matrix, _ = cv2.estimateAffinePartial2D(source_landmarks, target_landmarks, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("landmarks do not define a similarity transform")
    warped = cv2.warpAffine(
        source, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    alpha = face_oval_mask(target_landmarks, (height, width), rng)
    corrected = colour_transfer(warped, target, alpha)
    binary = (alpha > 0.3).astype(np.uint8) * 255
    x, y, w, h = cv2.boundingRect(binary)
    centre = (x + w // 2, y + h // 2)
    cloned = cv2.seamlessClone(corrected, target, binary, centre, cv2.NORMAL_CLONE)
    return cloned.astype(np.float32), alpha


def self_blend(
    target: np.ndarray, target_landmarks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Blend the face onto a colour-shifted, slightly warped copy of itself (self-blended images).

    The statistics of the blend boundary and of the colour/scale mismatch are what generic face
    manipulations share, which is why detectors trained on these generalise to unseen methods.
    """
    height, width = target.shape[:2]
    hsv = cv2.cvtColor(target, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-6, 6)) % 180
    hsv[..., 1] *= rng.uniform(0.8, 1.2)
    hsv[..., 2] = hsv[..., 2] * rng.uniform(0.85, 1.15) + rng.uniform(-10, 10)
    shifted = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)
    if rng.random() < 0.5:
        shifted = cv2.GaussianBlur(shifted, (0, 0), rng.uniform(0.6, 1.4))
    else:  # unsharp masking: the opposite frequency mismatch
        soft = cv2.GaussianBlur(shifted, (0, 0), 1.5)
        shifted = cv2.addWeighted(shifted, 1.6, soft, -0.6, 0)
    eye_dist = float(np.linalg.norm(target_landmarks[RIGHT_EYE] - target_landmarks[LEFT_EYE]))
    centre = target_landmarks.mean(axis=0)
    scale = rng.uniform(0.95, 1.05)
    warp = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), rng.uniform(-2, 2), scale)
    warp[:, 2] += rng.uniform(-0.06, 0.06, size=2) * eye_dist
    layer = cv2.warpAffine(
        shifted, warp, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
    )
    alpha = face_oval_mask(target_landmarks, (height, width), rng) * rng.uniform(0.6, 1.0)
    return layer.astype(np.float32), alpha
