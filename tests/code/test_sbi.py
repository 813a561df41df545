"""Self-blended images: a fake that differs from the real crop only inside the blended face region."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from dfguard.faces.align import template_points
from dfguard.training.sbi import self_blend


def _face_crop(size: int = 128, seed: int = 0) -> np.ndarray:
    """A textured synthetic crop (smooth shading plus fine detail), standing in for an aligned face."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    shading = 60 + 120 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.55) ** 2) * 6)
    base = np.stack([shading * 0.8, shading * 0.9, shading], -1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def test_changes_only_inside_the_mask() -> None:
    crop = _face_crop()
    for seed in range(5):
        fake, mask, real = self_blend(crop, np.random.default_rng(seed))
        assert real is crop
        assert fake.dtype == np.uint8 and fake.shape == crop.shape
        assert mask.dtype == np.float32 and mask.shape == crop.shape[:2]
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        change = np.abs(fake.astype(np.int64) - crop).sum(axis=2)
        assert change[mask == 0].max() == 0  # untouched outside the blend region
        inside = mask > 0.5 * mask.max()
        assert change[inside].mean() > 3.0  # and visibly altered inside it
        assert inside.mean() < 0.5  # the inner face, not the whole crop


def test_background_share_moves_the_colour_change_to_the_real_of_the_pair() -> None:
    crop = cv2.GaussianBlur(_face_crop(), (0, 0), 4)  # smooth: a shift of a few pixels changes it little
    fully_pasted = 0
    for seed in range(12):
        fake, mask, real = self_blend(crop, np.random.default_rng(seed), background_share=1.0)
        assert np.abs(real.astype(np.int64) - crop).mean() > 0.5  # the whole real is altered
        np.testing.assert_array_equal(fake[mask == 0], real[mask == 0])  # the fake shares its background
        if mask.max() < 1.0:
            continue  # a partial blend mixes the two, so which one the face came from is not measurable
        # Where the face is pasted in full, it is the original crop (shifted by a few pixels), not the
        # altered one.
        inside = mask == 1.0
        fake_inside = fake[inside].astype(np.int64)
        assert np.abs(fake_inside - crop[inside]).mean() < np.abs(fake_inside - real[inside]).mean()
        fully_pasted += 1
    assert fully_pasted >= 3
    # Half of the time, each way.
    moved = [
        self_blend(crop, np.random.default_rng(seed), background_share=0.5).real is not crop
        for seed in range(40)
    ]
    assert 10 < sum(moved) < 30
    with pytest.raises(ValueError, match="background_share"):
        self_blend(crop, np.random.default_rng(0), background_share=1.5)


def test_mask_follows_the_landmarks() -> None:
    crop = _face_crop()
    default = self_blend(crop, np.random.default_rng(0)).mask
    ys, xs = np.nonzero(default)
    assert abs(xs.mean() - 64) < 8 and abs(ys.mean() - 64) < 12  # the template face sits mid-crop
    shifted = template_points(128, 1.3) + np.array([-25.0, 10.0])
    moved = self_blend(crop, np.random.default_rng(0), landmarks=shifted).mask
    ys, xs = np.nonzero(moved)
    assert xs.mean() < 50 and ys.mean() > 60


def test_deterministic_given_the_generator() -> None:
    crop = _face_crop()
    a = self_blend(crop, np.random.default_rng(11))
    b = self_blend(crop, np.random.default_rng(11))
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_rejects_non_uint8_crops() -> None:
    with pytest.raises(ValueError, match="uint8"):
        self_blend(np.zeros((64, 64, 3), np.float32), np.random.default_rng(0))


def test_fast_enough_for_data_loader_workers() -> None:
    crop = _face_crop(224)
    rng = np.random.default_rng(0)
    self_blend(crop, rng)
    start = time.perf_counter()
    for _ in range(20):
        self_blend(crop, rng)
    assert (time.perf_counter() - start) / 20 < 0.03  # about 3 ms here; generous for busy CI machines
