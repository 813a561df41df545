"""The new kinds of fake the loop benchmark asks the loop to learn: each changes what it says it does
and nothing else, the same way for the same seed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dfguard.corpus.novel import NOVEL_KINDS, morph

# A 200x200 picture with a face-like layout: eyes at (80, 90) and (120, 90), nose, mouth corners.
LANDMARKS = np.array([[80, 90], [120, 90], [100, 110], [85, 130], [115, 130]], np.float32)


def _picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (200, 200, 3), np.uint8), (0, 0), 2)
    face = image.copy()
    cv2.ellipse(face, (100, 110), (38, 50), 0, 0, 360, (150, 170, 210), -1)
    image = cv2.addWeighted(image, 0.4, face, 0.6, 0)  # a skin tone over the picture's own texture
    for x, y in LANDMARKS.astype(int):
        cv2.circle(image, (x, y), 4, (40, 40, 40), -1)
    return image


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 2


@pytest.mark.parametrize("kind", ["reshape", "recolour"])
def test_a_local_edit_changes_the_face_and_leaves_the_rest(kind) -> None:
    image = _picture(1)
    edited = NOVEL_KINDS[kind](image, LANDMARKS, np.random.default_rng(0))
    changed = _changed(image, edited)
    assert edited.shape == image.shape and edited.dtype == np.uint8
    assert changed[70:140, 70:130].mean() > 0.02  # the face was edited
    far = np.ones_like(changed)
    far[20:190, 10:190] = False  # more than 2.5 eye distances from every landmark
    assert not changed[far].any()
    again = NOVEL_KINDS[kind](image, LANDMARKS, np.random.default_rng(0))
    assert np.array_equal(edited, again)  # same seed, same fake


def test_resynth_regenerates_every_part_of_the_picture() -> None:
    image = _picture(2)
    edited = NOVEL_KINDS["resynth"](image, LANDMARKS, np.random.default_rng(0))
    changed = _changed(image, edited)
    for rows in (slice(0, 50), slice(150, 200)):  # far from the face too
        assert changed[rows].mean() > 0.3


def test_a_morph_mixes_the_second_face_in_and_keeps_the_first_ones_surroundings() -> None:
    first, second = _picture(3), _picture(4)
    mixed = morph(first, LANDMARKS, second, LANDMARKS, np.random.default_rng(0))
    centre = (slice(100, 120), slice(90, 110))
    # Inside the face the second person's texture is mixed in; far outside, the first picture is whole.
    assert np.abs(mixed[centre].astype(int) - first[centre]).mean() > 1.0
    assert not _changed(first, mixed)[:10].any()
