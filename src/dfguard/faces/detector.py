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
    """Batched MTCNN. `min_face_px` is the smallest face searched for; smaller ones are not found."""

    def __init__(self, min_face_px: int = 40, min_score: float = 0.9, device: str | None = None) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.min_score = min_score
        self._mtcnn = MTCNN(keep_all=True, min_face_size=min_face_px, device=self.device, post_process=False)

    def detect(self, image_bgr: np.ndarray) -> list[Face]:
        """Faces in one BGR image, largest first."""
        return self.detect_batch([image_bgr])[0]

    def detect_batch(self, images_bgr: list[np.ndarray]) -> list[list[Face]]:
        """Faces in each of several same-sized BGR images (MTCNN batches them in one pass)."""
        if not images_bgr:
            return []
        rgb = np.stack([cv2.cvtColor(image, cv2.COLOR_BGR2RGB) for image in images_bgr])
        with torch.inference_mode():
            boxes, scores, points = self._mtcnn.detect(rgb, landmarks=True)
        results = []
        for frame_boxes, frame_scores, frame_points in zip(boxes, scores, points, strict=True):
            faces = []
            if frame_boxes is not None:
                for box, score, landmarks in zip(frame_boxes, frame_scores, frame_points, strict=True):
                    if score is not None and float(score) >= self.min_score:
                        faces.append(
                            Face(np.asarray(box, np.float32), np.asarray(landmarks, np.float32), float(score))
                        )
            faces.sort(key=lambda face: face.width * face.height, reverse=True)
            results.append(faces)
        return results
