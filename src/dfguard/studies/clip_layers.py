"""Which CLIP blocks carry the evidence: the study behind `clip_frozen`'s feature layout.

A few faces of every video of one split are encoded once by the INT8 graph with the token states of
all twelve blocks; then a logistic regression on each candidate set of features is cross-validated
over groups of people (`crossval.identity_folds` on that split's videos) and scored on its held-out
videos (the mean of their faces' logits). Run on the training split, the choice never sees the
validation and test people that the pipeline's figures are measured on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from dfguard.faces.crops import read_crop
from dfguard.faces.table import read_faces
from dfguard.metrics import roc_auc
from dfguard.models.clip import DEPTH, ClipOnnxEncoder, clip_preset
from dfguard.models.clip_frozen import CLS_BLOCKS
from dfguard.plots import plot_bars
from dfguard.studies.crossval import identity_folds
from dfguard.transforms import to_batch

log = logging.getLogger(__name__)

RESULT_NAME, PLOT_NAME = "clip_layers.json", "clip_layers.png"


@dataclass(frozen=True)
class BlockFeatures:
    """Per face: the projected embedding (N, 512), and per block the CLS token and the mean patch
    token (N, 12, 768 each)."""

    embedding: np.ndarray
    cls: np.ndarray
    patch_mean: np.ndarray


def _sets(f: BlockFeatures) -> dict[str, np.ndarray]:
    """The candidate feature sets, by name; the shipped layout is `clip_frozen`'s `CLS_BLOCKS`."""
    n, shipped = len(f.embedding), list(CLS_BLOCKS)
    sets = {
        "embedding + last patch mean (v1)": np.hstack([f.embedding, f.patch_mean[:, -1]]),
        "CLS, all 12 blocks": f.cls.reshape(n, -1),
        f"CLS, blocks {shipped[0] + 1}-{DEPTH} + last patch mean (v2, shipped)": np.hstack(
            [f.cls[:, shipped].reshape(n, -1), f.patch_mean[:, -1]]
        ),
        f"CLS + patch mean, blocks {shipped[0] + 1}-{DEPTH}": np.hstack(
            [f.cls[:, shipped].reshape(n, -1), f.patch_mean[:, shipped].reshape(n, -1)]
        ),
        f"CLS, blocks {DEPTH - 5}-{DEPTH}": f.cls[:, DEPTH - 6 :].reshape(n, -1),
    }
    for block in range(DEPTH):
        sets[f"block {block + 1} alone (CLS + patch mean)"] = np.hstack(
            [f.cls[:, block], f.patch_mean[:, block]]
        )
    return sets


def pick_faces(faces: pd.DataFrame, per_video: int) -> pd.DataFrame:
    """Up to `per_video` subject faces per video, spread evenly over its frames."""
    picked = []
    for _, video in faces.sort_values(["video_id", "frame"]).groupby("video_id", sort=True):
        rows = np.unique(np.linspace(0, len(video) - 1, min(per_video, len(video))).round().astype(int))
        picked.append(video.iloc[rows])
    return pd.concat(picked, ignore_index=True)


def encode_blocks(paths: list[Path], progress: bool = True) -> BlockFeatures:
    """Every block's CLS token and mean patch token of each crop, one crop per call (see
    `ClipInt8Backbone.encode` for why one at a time)."""
    encoder = ClipOnnxEncoder(threads=0, blocks=range(DEPTH))
    preset = clip_preset()
    embedding, cls, patch_mean = [], [], []
    for path in tqdm(paths, desc="encode faces", unit="face", disable=not progress):
        out = encoder.encode_batch(to_batch([read_crop(str(path))], preset).numpy())
        embedding.append(out.embedding[0])
        cls.append(np.stack([state[0, 0] for state in out.blocks]))
        patch_mean.append(np.stack([state[0, 1:].mean(axis=0) for state in out.blocks]))
    return BlockFeatures(np.stack(embedding), np.stack(cls), np.stack(patch_mean))


def video_auc_by_set(
    sets: dict[str, np.ndarray],
    targets: np.ndarray,
    video_ids: np.ndarray,
    folds: np.ndarray,
    strength: float = 0.005,
    on_set: Callable[[str, float], None] | None = None,
) -> dict[str, float]:
    """Held-out video AUC of a standardised logistic regression (inverse strength `strength`) on
    each feature set: each fold's faces scored by a model fitted on the other folds, a video's score
    the mean of its faces'."""
    result = {}
    for name, features in sets.items():
        logits = np.zeros(len(targets))
        for fold in np.unique(folds):
            train, held = folds != fold, folds == fold
            scaler = StandardScaler().fit(features[train])
            model = LogisticRegression(C=strength, max_iter=3000)
            model.fit(scaler.transform(features[train]), targets[train])
            logits[held] = model.decision_function(scaler.transform(features[held]))
        videos = pd.DataFrame({"video": video_ids, "logit": logits, "target": targets}).groupby("video")
        result[name] = round(
            roc_auc(videos["target"].first().to_numpy(), videos["logit"].mean().to_numpy()), 4
        )
        if on_set is not None:
            on_set(name, result[name])
    return result


def run_clip_layer_study(
    faces_dir: str | Path,
    manifest_path: str | Path,
    out_dir: str | Path,
    split: str = "train",
    per_video: int = 6,
    folds: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode, cross-validate every feature set, write `clip_layers.json` and a bar plot."""
    faces = pick_faces(read_faces(faces_dir, split=split, subject_only=True), per_video)
    manifest = pd.read_parquet(manifest_path)
    manifest = manifest[manifest["video_id"].isin(faces["video_id"])]
    fold_of = identity_folds(manifest, folds, seed)
    features = encode_blocks([Path(faces_dir) / crop for crop in faces["crop"]], progress)
    aucs = video_auc_by_set(
        _sets(features),
        faces["target"].to_numpy(),
        faces["video_id"].to_numpy(),
        faces["video_id"].map(fold_of).to_numpy(),
        on_set=(lambda name, auc: log.info("%s: video AUC %.3f", name, auc)) if progress else None,
    )
    result = {
        "split": split,
        "faces": len(faces),
        "videos": int(faces["video_id"].nunique()),
        "folds": folds,
        "seed": seed,
        "per_video": per_video,
        "video_auc": aucs,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_NAME).write_text(json.dumps(result, indent=2) + "\n")
    plot_bars(
        aucs, out / PLOT_NAME, xlabel="held-out video AUC", title=f"CLIP features, {split} split's people"
    )
    return result
