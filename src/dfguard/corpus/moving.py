"""Real clips whose faces move as real faces do: the check the motion evidence must pass.

The demo corpus's real clips are photos filmed by a virtual camera, so nothing in them moves against the
head; in real footage the jaw moves as people speak. `talking_clip` warps a real clip's lower face
smoothly up and down (a jaw opening and closing at `hz`), by `share` of the face's height at the most.
Every pixel still comes from the real frame, nothing is pasted: the result is real footage, and a
detector that calls it fake is fooled by motion, not finding a manipulation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from dfguard.faces.subject import FACE_TRUTH
from dfguard.media import write_video

JAW_BELOW_MOUTH = 0.1  # the warp's centre, below the mouth corners' midpoint, in face heights
JAW_SPREAD = (0.25, 0.18)  # its Gaussian's width and height, in face heights: the chin and the cheeks


def talking_frames(
    frames: Sequence[np.ndarray],
    boxes: dict[int, np.ndarray],
    landmarks: dict[int, np.ndarray],
    fps: float,
    share: float,
    hz: float = 1.0,
) -> list[np.ndarray]:
    """`frames` (BGR) with the lower face of each frame that has a face record (`boxes[i]`: x1, y1, x2,
    y2; `landmarks[i]`: 5 x 2) pulled down by up to `share` of the face's height, following
    (1 - cos(2 pi hz t)) / 2: still at t = 0, fully open every 1 / hz seconds."""
    height, width = frames[0].shape[:2]
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    moved = []
    for index, frame in enumerate(frames):
        if index not in boxes:
            moved.append(frame)
            continue
        face_height = float(boxes[index][3] - boxes[index][1])
        mouth = np.asarray(landmarks[index], np.float32).reshape(5, 2)[3:5].mean(axis=0)
        centre_x, centre_y = mouth[0], mouth[1] + JAW_BELOW_MOUTH * face_height
        spread_x, spread_y = (s * face_height for s in JAW_SPREAD)
        bump = np.exp(-(((grid_x - centre_x) / spread_x) ** 2 + ((grid_y - centre_y) / spread_y) ** 2) / 2)
        opening = share * face_height * (0.5 - 0.5 * np.cos(2 * np.pi * hz * index / fps))
        shift = (opening * bump).astype(np.float32)
        moved.append(
            cv2.remap(frame, grid_x, grid_y - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        )
    return moved


def talking_clips(
    corpus_dir: str | Path, clips: Sequence[str], out_dir: str | Path, share: float, crf: int = 18
) -> list[Path]:
    """`talking_frames` of each of the corpus's real `clips` (paths relative to `corpus_dir`), placed
    by the corpus's own face records, written under `out_dir` with their file names."""
    corpus, out = Path(corpus_dir), Path(out_dir)
    truth = pd.read_parquet(corpus / FACE_TRUTH)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for clip in clips:
        capture = cv2.VideoCapture(str(corpus / clip))
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = []
        while (read := capture.read())[0]:
            frames.append(read[1])
        capture.release()
        if not frames:
            raise ValueError(f"{corpus / clip}: no frames could be read")
        rows = truth[truth["path"] == clip]
        boxes = {int(r.frame): np.asarray(r.box) for r in rows.itertuples()}
        landmarks = {int(r.frame): np.asarray(r.landmarks) for r in rows.itertuples()}
        path = out / Path(clip).name
        write_video(talking_frames(frames, boxes, landmarks, fps, share), path, round(fps), crf)
        written.append(path)
    return written
