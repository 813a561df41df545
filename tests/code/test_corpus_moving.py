"""Real clips whose jaw moves: the lower face moves, the rest of the frame and the first frame do not."""

from __future__ import annotations

import numpy as np

from dfguard.corpus.moving import talking_frames


def test_the_jaw_moves_and_nothing_else_does() -> None:
    rng = np.random.default_rng(0)
    # A textured frame (remapping a flat one would change nothing) with a 100 px face at (100, 60).
    base = cv2_blur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    frames = [base.copy() for _ in range(13)]
    box = np.array([100.0, 60.0, 200.0, 160.0])
    marks = np.array([[125, 95], [175, 95], [150, 120], [130, 140], [170, 140]], np.float64)
    boxes, landmarks = {i: box for i in range(13)}, {i: marks for i in range(13)}

    moved = talking_frames(frames, boxes, landmarks, fps=12.0, share=0.06, hz=1.0)
    assert np.array_equal(moved[0], frames[0]), "still at t = 0"
    half_open = moved[6].astype(int) - frames[6]  # t = 0.5 s: fully open
    jaw = np.abs(half_open[140:175, 120:180]).mean()
    far = np.abs(half_open[:, 260:]).max()
    assert jaw > 5 and far == 0, (jaw, far)
    assert np.abs(moved[3].astype(int) - frames[3])[140:175, 120:180].mean() < jaw  # half way
    # A frame without a face record is left as it is.
    untouched = talking_frames(frames[:2], {}, {}, fps=12.0, share=0.06)
    assert all(np.array_equal(a, b) for a, b in zip(untouched, frames[:2], strict=True))


def cv2_blur(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 2)
