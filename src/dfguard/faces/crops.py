"""Reading the face crops a face dataset stores."""

from __future__ import annotations

import cv2
import numpy as np


def read_crop(path: str) -> np.ndarray:
    """A stored crop as uint8 BGR; OSError when the file is missing or not an image."""
    crop = cv2.imread(path, cv2.IMREAD_COLOR)
    if crop is None:
        raise OSError(f"cannot read face crop {path}")
    return crop
