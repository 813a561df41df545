"""Align a face to a canonical upright pose with its 5 landmarks, then crop it with a margin.

The template is InsightFace's 5-point layout for 112x112 face crops (eyes, nose tip, mouth corners),
the one DeepfakeBench and most face pipelines align to, written here in units of the face square.
A similarity transform (rotation, uniform scale, translation: no shear, so the face keeps its shape)
is fitted by least squares (Umeyama), and the square is then widened by `margin` so the crop also
holds the forehead, jaw line and some background, where blending artefacts of face swaps show.
"""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_NAME = "insightface-5pt-112"
# Left eye, right eye, nose tip, left mouth corner, right mouth corner, as fractions of the face square.
TEMPLATE = (
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
        np.float64,
    )
    / 112.0
)


def template_points(crop_size: int, margin: float) -> np.ndarray:
    """Where the 5 landmarks land in a `crop_size` crop whose side is `margin` face squares."""
    return ((TEMPLATE - 0.5) / margin + 0.5) * crop_size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix mapping `src` points onto `dst` with least squared error (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    # A reflection would fit a mirrored face; force a proper rotation.
    d = np.array([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = float((s * d).sum() / (src_c**2).sum(axis=1).mean())
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(
    image_bgr: np.ndarray, landmarks: np.ndarray, crop_size: int, margin: float
) -> tuple[np.ndarray, np.ndarray]:
    """The aligned `crop_size` square crop and the 2x3 matrix from image to crop coordinates.

    Parts of the crop outside the image are black, as in the published pipelines models were trained on.
    """
    matrix = similarity_transform(landmarks, template_points(crop_size, margin))
    crop = cv2.warpAffine(
        image_bgr, matrix, (crop_size, crop_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
    return crop, matrix
