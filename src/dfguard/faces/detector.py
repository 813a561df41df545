"""The face detector: MTCNN from facenet-pytorch, whose weights ship inside the package (no download).

It returns boxes, detection scores and the 5 landmarks (eyes, nose, mouth corners) that alignment and
the synthetic manipulations need. Torch threads and device are the caller's choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from facenet_pytorch import MTCNN

from dfguard.runtime import default_device

# MTCNN's first network sees 12 px windows; below that a face cannot be found at any pyramid level.
MTCNN_WINDOW_PX = 12
# Score thresholds of its three stages and the pyramid's scale step: facenet-pytorch's defaults, passed
# explicitly so the preprocessing contract records what really ran even if a release changes them.
MTCNN_THRESHOLDS = (0.6, 0.7, 0.7)
MTCNN_PYRAMID_FACTOR = 0.709


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) x1, y1, x2, y2 in pixels
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, left mouth corner, right mouth corner
    score: float

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])


class FaceDetector:
    """Batched MTCNN. `min_face_px` is the smallest face searched for; smaller ones are not found.

    With `detect_face_px`, each frame is first shrunk so that a face of the smallest size searched for
    measures `detect_face_px` pixels (never enlarged), and boxes and landmarks are mapped back to the
    frame. MTCNN's cost is its image pyramid and the candidate windows it crops and scores, which
    grow with the frame's area; shrinking keeps the guarantee "every face of at least `min_face_px`
    is searched for" at any resolution while a 1080p frame costs about what a 360p frame does.

    `exact` runs MTCNN in float64, so that the same image gives the same faces on every x86-64 CPU.
    """

    def __init__(
        self,
        min_face_px: int = 40,
        min_score: float = 0.9,
        device: str | None = None,
        detect_face_px: int | None = None,
        channels_last: bool = False,
        exact: bool = False,
    ) -> None:
        if detect_face_px is not None and detect_face_px < MTCNN_WINDOW_PX:
            raise ValueError(f"detect_face_px must be at least {MTCNN_WINDOW_PX}, got {detect_face_px}")
        self.device = default_device(device)
        self.min_face_px = min_face_px
        self.min_score = min_score
        self.detect_face_px = detect_face_px
        self._mtcnn = MTCNN(
            keep_all=True,
            thresholds=list(MTCNN_THRESHOLDS),
            factor=MTCNN_PYRAMID_FACTOR,
            device=self.device,
            post_process=False,
        )
        if channels_last:
            # Channels-last convolutions and pooling run 2-3x faster on CPU (oneDNN) for these small
            # nets, but round differently (landmarks move by ~1e-4 px): opt-in, so the corpus builder's
            # detections, and with them the corpus bytes its DVC lock records, stay as they were.
            self._mtcnn.to(memory_format=torch.channels_last)
        if exact:
            # float64, for results that must not depend on the CPU (the demo corpus's bytes): in float32,
            # oneDNN's AVX2 and AVX-512 convolution kernels round differently and move landmarks by
            # ~2.4e-4 px; in float64 the two agreed to the last bit on every photo checked, at about 8x
            # the time (a minute for the corpus's 17 photos).
            self._mtcnn.double()

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in one BGR image, largest first."""
        return self.detect_batch([image_bgr])[0]

    def detect_batch(self, images_bgr: list[np.ndarray], min_face_px: int | None = None) -> list[list[Face]]:
        """Faces in each of several same-sized BGR images (MTCNN batches them in one pass), largest first.

        `min_face_px` overrides the smallest face searched for in this call.
        """
        if not images_bgr:
            return []
        min_face_px = min_face_px or self.min_face_px
        if min(images_bgr[0].shape[:2]) < min_face_px:
            # No face of the searched size fits, and MTCNN's image pyramid would be empty (it raises).
            return [[] for _ in images_bgr]
        scale = min(1.0, self.detect_face_px / min_face_px) if self.detect_face_px else 1.0
        if scale < 1.0:
            images_bgr = [
                cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                for image in images_bgr
            ]
        rgb = np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in images_bgr])
        self._mtcnn.min_face_size = max(MTCNN_WINDOW_PX, round(min_face_px * scale))
        with torch.inference_mode():
            boxes, scores, points = self._mtcnn.detect(rgb, landmarks=True)
        results = []
        for frame_boxes, frame_scores, frame_points in zip(boxes, scores, points, strict=True):
            faces = []
            if frame_boxes is not None:
                for box, score, landmarks in zip(frame_boxes, frame_scores, frame_points, strict=True):
                    if score is not None and float(score) >= self.min_score:
                        faces.append(Face(_unscale(box, scale), _unscale(landmarks, scale), float(score)))
            faces.sort(key=lambda face: face.width * face.height, reverse=True)
            results.append(faces)
        return results


def _unscale(coords: np.ndarray, scale: float) -> np.ndarray:
    """Map pixel coordinates from the shrunk image back to the frame (pixel centres line up)."""
    coords = np.asarray(coords, np.float32)
    return coords if scale == 1.0 else ((coords + 0.5) / scale - 0.5).astype(np.float32)
