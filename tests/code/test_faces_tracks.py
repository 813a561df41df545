"""Tracks: faces linked across sampled frames by position and size, one id per person."""

from __future__ import annotations

import numpy as np

from dfguard.faces.detector import Face
from dfguard.faces.tracks import assign_tracks


def _face(cx: float, cy: float, size: float) -> Face:
    box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], np.float32)
    return Face(box, np.zeros((5, 2), np.float32), 0.99)


def test_two_people_keep_their_ids_whatever_order_they_are_found_in() -> None:
    frames = []
    for i in range(6):
        left, right = _face(100 + 5 * i, 120, 80), _face(260 - 5 * i, 110, 90 - 2 * i)
        frames.append([left, right] if i % 2 else [right, left])
    ids = assign_tracks(frames)
    left_ids = {ids[i][0 if i % 2 else 1] for i in range(6)}
    right_ids = {ids[i][1 if i % 2 else 0] for i in range(6)}
    assert len(left_ids) == len(right_ids) == 1 and left_ids != right_ids
    assert ids[0] == [0, 1]  # ids count from 0 in order of first appearance


def test_a_person_missing_from_some_frames_keeps_the_id() -> None:
    frames = [[_face(100, 100, 80), _face(250, 100, 80)], [_face(104, 100, 80)], [], [_face(255, 102, 82)]]
    assert assign_tracks(frames) == [[0, 1], [0], [], [1]]


def test_a_far_jump_or_a_very_different_size_starts_a_new_track() -> None:
    frames = [[_face(100, 100, 80)], [_face(300, 100, 80)], [_face(300, 100, 200)]]
    assert assign_tracks(frames) == [[0], [1], [2]]
