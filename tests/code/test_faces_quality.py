"""Quality metadata: JPEG quality from DCT quantisation, blockiness, sharpness and brightness."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dfguard.faces.quality import measure_quality


@pytest.fixture(scope="module")
def photo(sources_dir: Path) -> np.ndarray:
    return cv2.imread(str(sources_dir / "face_recognition" / "biden.jpg"))[:400, :400]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


BOX = np.array([21.3, 13.7, 330.0, 350.2])  # deliberately off the 8x8 grid


@pytest.mark.parametrize("quality", [25, 40, 60, 75, 85])
def test_jpeg_quality_is_recovered_from_the_pixels(photo: np.ndarray, quality: int) -> None:
    decoded = _jpeg(photo, quality)
    measured = measure_quality(decoded, BOX, decoded[:224, :224])
    assert measured.jpeg_quality == pytest.approx(quality, abs=2)


def test_no_jpeg_quality_where_no_quantisation_shows(photo: np.ndarray) -> None:
    # Shifting by 3 pixels moves the 8x8 grid: the lattice is gone, as after any resampling.
    shifted = np.ascontiguousarray(_jpeg(photo, 50)[3:, 3:])
    assert np.isnan(measure_quality(shifted, BOX, shifted[:224, :224]).jpeg_quality)
    resized = cv2.resize(photo, None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA)
    assert np.isnan(measure_quality(resized, BOX * 0.9, resized[:224, :224]).jpeg_quality)


def test_blockiness_grows_as_quality_drops_and_blur_lowers_sharpness(photo: np.ndarray) -> None:
    blockiness = [measure_quality(_jpeg(photo, q), BOX, photo[:224, :224]).blockiness for q in (20, 50, 90)]
    assert blockiness[0] > blockiness[1] > blockiness[2] > 1.0
    crop = photo[100:324, 100:324]
    sharp = measure_quality(photo, BOX, crop)
    blurred = measure_quality(photo, BOX, cv2.GaussianBlur(crop, (0, 0), 2))
    assert blurred.sharpness < sharp.sharpness / 3
    assert sharp.brightness == pytest.approx(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).mean())


def test_a_box_too_small_for_blocks_gives_nan() -> None:
    frame = np.full((100, 100, 3), 128, np.uint8)
    measured = measure_quality(frame, np.array([10, 10, 30, 30.0]), frame[:50, :50])
    assert np.isnan(measured.jpeg_quality) and np.isnan(measured.blockiness)
