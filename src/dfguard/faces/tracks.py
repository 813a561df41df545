"""Link the faces found in the sampled frames of one video into tracks: one id per person.

Sampled frames can be a second apart, so tracking is by position and size, not by optical flow: a
face continues the track whose last face is nearest (in face sizes) and of similar size. Greedy
matching by distance is enough for the few faces per frame deepfake videos hold.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from dfguard.faces.detector import Face

MAX_SHIFT_IN_FACES = 1.0  # a person moves at most one face size between sampled frames
MAX_SIZE_RATIO = 1.6  # and does not grow or shrink by more than this


def _centre_and_size(box: np.ndarray) -> tuple[np.ndarray, float]:
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    return centre, float(max(box[2] - box[0], box[3] - box[1]))


def assign_tracks(faces_per_frame: list[list[Face]]) -> list[list[int]]:
    """A track id for every face, frame by frame; ids count from 0 in order of first appearance.

    A track that misses frames (a turned head, a failed detection) is still continued when the person
    reappears near where they were last seen.
    """
    last_box: list[np.ndarray] = []
    ids_per_frame = []
    for faces in faces_per_frame:
        pairs = []
        for face_index, face in enumerate(faces):
            centre, size = _centre_and_size(face.box)
            for track, box in enumerate(last_box):
                track_centre, track_size = _centre_and_size(box)
                shift = float(np.linalg.norm(centre - track_centre)) / ((size + track_size) / 2)
                ratio = max(size, track_size) / max(min(size, track_size), 1e-6)
                if shift <= MAX_SHIFT_IN_FACES and ratio <= MAX_SIZE_RATIO:
                    pairs.append((shift, face_index, track))
        ids = [-1] * len(faces)
        used_tracks: set[int] = set()
        for _, face_index, track in sorted(pairs):
            if ids[face_index] == -1 and track not in used_tracks:
                ids[face_index] = track
                used_tracks.add(track)
        for face_index, face in enumerate(faces):
            if ids[face_index] == -1:
                ids[face_index] = len(last_box)
                last_box.append(face.box)
            else:
                last_box[ids[face_index]] = face.box
        ids_per_frame.append(ids)
    return ids_per_frame


def track_keys(faces: pd.DataFrame) -> list[str]:
    """The columns that name a face track: video_id and track_id, or video_id alone in tables of one
    track per video (a face dataset's subject faces made without tracking)."""
    return ["video_id", "track_id"] if "track_id" in faces else ["video_id"]


def ordered_tracks(faces: pd.DataFrame) -> Iterator[tuple[object, np.ndarray]]:
    """(video_id, the row positions of one face track in frame order) for each track of `faces`
    (columns video_id and frame, and track_id unless each video is one track)."""
    frames = faces["frame"].to_numpy()
    for key, rows in faces.groupby(track_keys(faces), sort=False).indices.items():
        yield (key[0] if isinstance(key, tuple) else key), rows[np.argsort(frames[rows], kind="stable")]
