"""Alignment: the similarity fit, and real faces (upright or rolled) landing on the template."""

from __future__ import annotations

import numpy as np
import pytest

from dfguard.faces.align import align_face, similarity_transform, template_points
from dfguard.faces.detector import FaceDetector

CROP, MARGIN = 224, 1.3


def test_similarity_fit_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = np.radians(33), 1.7, np.array([12.0, -4.0])
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = similarity_transform(src, src @ rotation.T + shift)
    assert matrix == pytest.approx(np.hstack([rotation, shift[:, None]]), abs=1e-9)


def test_a_mirrored_target_is_not_fitted_with_a_reflection() -> None:
    src = np.array([[0, 0], [10, 0], [5, 5], [2, 9], [8, 9]], float)
    mirrored = src * [-1, 1]
    assert np.linalg.det(similarity_transform(src, mirrored)[:, :2]) > 0


def test_template_with_margin_stays_centred_and_shrinks() -> None:
    tight, wide = template_points(CROP, 1.0), template_points(CROP, MARGIN)
    assert (wide - CROP / 2) == pytest.approx((tight - CROP / 2) / MARGIN)


@pytest.mark.parametrize("roll_deg", [0.0, 20.0, -25.0])
def test_real_faces_are_aligned_upright_with_eyes_on_the_template(face_scenes, roll_deg: float) -> None:
    frame, (truth,) = face_scenes.frame([("obama", (160, 120), 110)], roll_deg=roll_deg)
    crop, matrix = align_face(frame, truth, CROP, MARGIN)
    assert crop.shape == (CROP, CROP, 3)
    target = template_points(CROP, MARGIN)
    mapped = truth @ matrix[:, :2].T + matrix[:, 2]
    # A least-squares fit of 5 points of a real face: the eyes land close, a smile is wider than the
    # template's mouth, and nothing lands far.
    assert np.abs(mapped[:2] - target[:2]).max() < 4
    assert np.abs(mapped - target).max() < 12
    # Independent check: the detector finds the eyes level and where the template puts them.
    (face,) = FaceDetector(min_face_px=60).detect(crop)
    left, right = face.landmarks[0], face.landmarks[1]
    assert abs(left[1] - right[1]) < 4
    assert np.abs(face.landmarks[:2] - target[:2]).max() < 8
