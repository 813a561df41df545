"""Render one target clip and its manipulated twin from a still photo, as a moving camera would film it.

Every frame is the photo seen through a smooth camera path (pan, zoom, small roll, hand shake), lit by
a slowly changing exposure and white balance, with sensor noise, then H.264-compressed at the clip's
CRF. The fake uses the same path, light and noise, with the manipulated face layer composited over it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from dfguard.corpus.manipulate import face_swap, self_blend
from dfguard.media import write_video

ROI_HALF_SIZE_IN_FACES = 1.6  # the still the manipulation is computed on: 3.2 face heights wide


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to render one real clip and its fake, reproducibly."""

    clip_name: str
    identity: str
    photo: str
    box: np.ndarray
    landmarks: np.ndarray
    method: str  # "FaceSwap" or "SelfBlend"
    source_identity: str
    source_photo: str
    source_box: np.ndarray
    source_landmarks: np.ndarray
    fps: int
    n_frames: int
    width: int
    height: int
    crf: int
    face_height: float
    seed: int
    real_path: str
    fake_path: str


@lru_cache(maxsize=8)
def _load_photo(path: str) -> np.ndarray:
    image = cv2.imread(path)
    if image is None:
        raise ValueError(f"unreadable source photo {path}")
    return image


def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=interpolation)


def _pad_with_blurred_fill(image: np.ndarray, pad: int) -> np.ndarray:
    """Surround a photo with a dimmed, heavily blurred extension of itself.

    A portrait photo is narrower than a landscape frame; phones and editors fill the sides with a
    blurred copy, which looks natural, where mirroring the border would show the person twice.
    """
    height, width = image.shape[:2]
    extended = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT101)
    small = cv2.resize(extended, None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 3)
    filled = (cv2.resize(small, extended.shape[1::-1], interpolation=cv2.INTER_LINEAR) * 0.7).astype(np.uint8)
    filled[pad : pad + height, pad : pad + width] = image
    return filled


def _smooth_walk(rng: np.random.Generator, n: int, sigma: float, dims: int = 2) -> np.ndarray:
    """A random walk low-pass filtered to look like hand shake rather than jitter."""
    steps = rng.normal(0, sigma, size=(n + 8, dims)).cumsum(axis=0)
    kernel = np.ones(5) / 5
    smooth = np.stack([np.convolve(steps[:, d], kernel, mode="same") for d in range(dims)], axis=1)[4 : 4 + n]
    return smooth - smooth.mean(axis=0)


def camera_path(plan: ClipPlan, face_centre: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """One 2x3 affine per frame mapping (scaled) photo coordinates to frame coordinates."""
    n, width, height = plan.n_frames, plan.width, plan.height
    t = np.linspace(0.0, 1.0, n)
    ease = 0.5 - 0.5 * np.cos(np.pi * t)
    zoom = np.interp(ease, [0, 1], rng.uniform(0.94, 1.12, size=2))
    roll = rng.uniform(-2, 2) + rng.uniform(0, 3) * np.sin(
        2 * np.pi * (t * rng.uniform(0.3, 1.0) + rng.random())
    )
    start = rng.uniform([-0.12 * width, -0.08 * height], [0.12 * width, 0.06 * height])
    end = rng.uniform([-0.12 * width, -0.08 * height], [0.12 * width, 0.06 * height])
    anchor = np.array([width / 2, height * 0.47]) + start + (end - start) * ease[:, None]
    anchor += _smooth_walk(rng, n, rng.uniform(0.3, 1.2))
    matrices = []
    for i in range(n):
        angle = np.radians(roll[i])
        rotation = zoom[i] * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrices.append(np.hstack([rotation, (anchor[i] - rotation @ face_centre)[:, None]]))
    return matrices


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """outer ∘ inner for 2x3 affines."""
    return outer @ np.vstack([inner, [0, 0, 1]])


def render_pair(plan: ClipPlan, sources_dir: Path, out_dir: Path) -> list[dict]:
    """Write the real clip and its fake; return one ground-truth face row per frame of each."""
    rng = np.random.default_rng(plan.seed)
    scale = plan.face_height / float(plan.box[3] - plan.box[1])
    half = round(ROI_HALF_SIZE_IN_FACES * plan.face_height)
    pad = max(half, plan.width)  # enough for the widest camera framing around any face
    photo = _pad_with_blurred_fill(_scaled(_load_photo(str(sources_dir / plan.photo)), scale), pad)
    landmarks = plan.landmarks * scale + pad
    box = plan.box * scale + pad
    face_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])

    # The still the manipulation is computed on: a square around the face.
    x0, y0 = (face_centre - half).round().astype(int)
    still = photo[y0 : y0 + 2 * half, x0 : x0 + 2 * half]
    still_landmarks = (landmarks - [x0, y0]).astype(np.float32)
    if plan.method == "FaceSwap":
        source_scale = plan.face_height / float(plan.source_box[3] - plan.source_box[1])
        source = _scaled(_load_photo(str(sources_dir / plan.source_photo)), source_scale)
        layer, alpha = face_swap(still, still_landmarks, source, (plan.source_landmarks * source_scale), rng)
    else:
        layer, alpha = self_blend(still, still_landmarks, rng)

    frames = camera_path(plan, face_centre, rng)
    n = plan.n_frames
    gain = 1 + rng.uniform(0.03, 0.15) * np.sin(
        2 * np.pi * (np.linspace(0, 1, n) * rng.uniform(0.3, 1) + rng.random())
    )
    white = (
        1
        + np.outer(np.linspace(0, 1, n), rng.uniform(-0.05, 0.05, size=3))
        + rng.uniform(-0.04, 0.04, size=3)
    )
    noise_sigma = rng.uniform(1.5, 5.0)
    optics_sigma = rng.choice([0.0, 0.0, 0.6, 1.0])
    # Face-swap pipelines re-detect and re-align the face in every frame: the pasted layer wobbles by a
    # fraction of a pixel against the background, a temporal cue real detectors pick up.
    jitter = _smooth_walk(rng, n, 0.35)
    jitter_scale = 1 + _smooth_walk(rng, n, 0.002, dims=1)[:, 0]
    still_centre = face_centre - [x0, y0]
    size = (plan.width, plan.height)

    real_frames, fake_frames, truth = [], [], []
    for i, matrix in enumerate(frames):
        background = cv2.warpAffine(
            photo, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        )
        wobble = np.array([[jitter_scale[i], 0, 0], [0, jitter_scale[i], 0]], np.float64)
        wobble[:, 2] = still_centre * (1 - jitter_scale[i]) + jitter[i]
        layer_matrix = _compose(_compose(matrix, np.array([[1, 0, x0], [0, 1, y0]], np.float64)), wobble)
        face_layer = cv2.warpAffine(
            layer, layer_matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        )
        face_alpha = cv2.warpAffine(alpha, layer_matrix, size, flags=cv2.INTER_LINEAR, borderValue=0)[
            ..., None
        ]
        background = background.astype(np.float32)
        if optics_sigma > 0:
            background = cv2.GaussianBlur(background, (0, 0), optics_sigma)
        light = (gain[i] * white[i]).astype(np.float32)
        noise = rng.standard_normal(background.shape, dtype=np.float32) * noise_sigma
        real = background * light + noise
        # The generated face carries little of the camera's sensor noise.
        fake = real * (1 - face_alpha) + (face_layer * light + 0.3 * noise) * face_alpha
        real_frames.append(np.clip(real, 0, 255).astype(np.uint8))
        fake_frames.append(np.clip(fake, 0, 255).astype(np.uint8))
        frame_box = _apply(
            matrix, np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]])
        )
        truth.append(
            {
                "frame": i,
                "box": [*frame_box.min(axis=0).round(1).tolist(), *frame_box.max(axis=0).round(1).tolist()],
                "landmarks": _apply(matrix, landmarks).round(1).ravel().tolist(),
            }
        )
    write_video(real_frames, out_dir / plan.real_path, plan.fps, plan.crf)
    write_video(fake_frames, out_dir / plan.fake_path, plan.fps, plan.crf)
    return [{"path": p, **row} for p in (plan.real_path, plan.fake_path) for row in truth]
