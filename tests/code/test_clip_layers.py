"""The CLIP layer study's scoring: held-out video AUC per feature set, folds over people."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dfguard.studies.clip_layers import pick_faces, video_auc_by_set


def test_a_set_that_carries_the_label_ranks_held_out_videos_and_noise_does_not() -> None:
    rng = np.random.default_rng(0)
    videos = np.repeat(np.arange(40), 5)  # 40 videos of 5 faces
    targets = (videos % 2).astype(np.int64)
    folds = videos // 8  # 5 folds of 8 videos: no video in two folds
    informative = rng.normal(size=(200, 20)) + targets[:, None] * 0.8
    noise = rng.normal(size=(200, 20))
    aucs = video_auc_by_set({"signal": informative, "noise": noise}, targets, videos, folds, strength=1.0)
    assert aucs["signal"] > 0.95
    assert 0.2 < aucs["noise"] < 0.8


def test_faces_are_picked_evenly_across_each_video() -> None:
    faces = pd.DataFrame({"video_id": ["a"] * 10 + ["b"] * 2, "frame": [*range(10), 0, 5]})
    picked = pick_faces(faces.sample(frac=1.0, random_state=0), per_video=3)
    assert picked.loc[picked.video_id == "a", "frame"].tolist() == [0, 4, 9]  # first, middle, last
    assert picked.loc[picked.video_id == "b", "frame"].tolist() == [0, 5]  # all it has
