"""The subject of an item: the recorded face where a dataset records it, else the largest track."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dfguard.faces.subject import box_matches, mark_subjects

SMALL_BOX = [100.0, 100.0, 160.0, 170.0]  # 60 x 70
LARGE_BOX = [300.0, 80.0, 400.0, 200.0]  # 100 x 120


def _faces(frames: int = 4) -> pd.DataFrame:
    rows = []
    for frame in range(frames):
        for track, box in ((0, LARGE_BOX), (1, SMALL_BOX)):
            rows.append(
                {
                    "video_id": "v1",
                    "path": "fake/a.mp4",
                    "frame": frame,
                    "track_id": track,
                    "box": box,
                    "face_px": max(box[2] - box[0], box[3] - box[1]),
                }
            )
    rows.append(
        {"video_id": "v2", "path": "real/b.mp4", "frame": 0, "track_id": 0, "box": SMALL_BOX, "face_px": 70}
    )
    return pd.DataFrame(rows)


def test_box_matches_by_centre_or_overlap() -> None:
    true = np.array(SMALL_BOX)
    assert box_matches(true + 5, true)
    assert not box_matches(np.array(LARGE_BOX), true)


def test_recorded_face_wins_over_the_largest_face() -> None:
    faces = _faces()
    truth = pd.DataFrame(
        [{"path": "fake/a.mp4", "frame": f, "box": [b + 3 for b in SMALL_BOX]} for f in range(4)]
    )
    subject = mark_subjects(faces, truth)
    assert set(faces[subject & (faces.video_id == "v1")].track_id) == {1}
    assert subject[faces.video_id == "v2"].all(), "a single-face item is its own subject"


def test_without_a_record_the_largest_track_is_the_subject() -> None:
    faces = _faces()
    subject = mark_subjects(faces)
    assert set(faces[subject & (faces.video_id == "v1")].track_id) == {0}
    assert subject.sum() == 5


def test_a_record_that_matches_no_track_falls_back_to_the_largest() -> None:
    faces = _faces()
    truth = pd.DataFrame([{"path": "fake/a.mp4", "frame": f, "box": [600, 300, 640, 350]} for f in range(4)])
    assert set(faces[mark_subjects(faces, truth) & (faces.video_id == "v1")].track_id) == {0}


def test_no_faces_gives_an_empty_mask() -> None:
    empty = _faces().iloc[0:0]
    assert mark_subjects(empty).empty
