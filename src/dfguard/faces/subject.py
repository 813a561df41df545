"""Which face of each item is its subject: the person the item's label is about.

A fake clip's label is about the one manipulated face; anybody else in the frame is untouched. Training
on every face with the clip's label would teach a detector that those real faces are fake. Where a
dataset records where its subject is (the demo corpus's `face_truth.parquet`), the subject is the track
whose boxes match that record; elsewhere it is the track with the largest faces over the clip, the rule
FaceForensics++-style preprocessing uses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# A dataset may ship this table of each item's subject boxes (the demo corpus does, from how it was
# rendered): extraction then marks subjects by it, and the extraction benchmark scores against it.
FACE_TRUTH = "face_truth.parquet"

# A found box is the recorded face when its centre lies within this many face heights of the recorded
# centre, or when the boxes overlap by this IoU.
MATCH_CENTRE_IN_HEIGHTS = 0.3
MATCH_IOU = 0.4
# Share of a track's faces that must match the record for the track to be the subject.
MIN_MATCHING_SHARE = 0.5


def box_matches(box: np.ndarray, true: np.ndarray) -> bool:
    """Whether a found (x1, y1, x2, y2) box is the face recorded at `true`."""
    box, true = np.asarray(box, float), np.asarray(true, float)
    height = true[3] - true[1]
    centre_gap = np.linalg.norm((box[:2] + box[2:]) / 2 - (true[:2] + true[2:]) / 2)
    inter = np.clip(np.minimum(box[2:], true[2:]) - np.maximum(box[:2], true[:2]), 0, None).prod()
    union = np.prod(box[2:] - box[:2]) + np.prod(true[2:] - true[:2]) - inter
    return bool(centre_gap <= MATCH_CENTRE_IN_HEIGHTS * height or inter / union >= MATCH_IOU)


def mark_subjects(faces: pd.DataFrame, truth: pd.DataFrame | None = None) -> pd.Series:
    """A boolean per row of `faces` (columns video_id, path, frame, track_id, box, face_px): True for
    the faces of each item's subject track.

    `truth` (columns path, frame, box) gives the subject's box per frame where a dataset records it.
    """
    subject = pd.Series(False, index=faces.index, dtype=bool)
    if faces.empty:
        return subject
    true_boxes = (
        {(row.path, int(row.frame)): row.box for row in truth.itertuples(index=False)}
        if truth is not None
        else {}
    )
    for _, item in faces.groupby("video_id", sort=False):
        subject[item.index[item["track_id"] == _subject_track(item, true_boxes)]] = True
    return subject


def _subject_track(item: pd.DataFrame, true_boxes: dict[tuple[str, int], np.ndarray]) -> int:
    matching: dict[int, list[bool]] = {}
    for row in item.itertuples(index=False):
        true = true_boxes.get((row.path, int(row.frame)))
        if true is not None:
            matching.setdefault(int(row.track_id), []).append(box_matches(row.box, true))
    shares = {track: float(np.mean(hits)) for track, hits in matching.items()}
    if shares and max(shares.values()) >= MIN_MATCHING_SHARE:
        return max(shares, key=shares.__getitem__)
    return int(item.groupby("track_id")["face_px"].sum().idxmax())
