"""The feedback dataset: reviewers' labels of served predictions, as a face dataset with the files and
contract of `data/faces` (`faces.parquet`, `crops/`, `contract.json`), so training, calibration and
evaluation read it as they read any face dataset, plus where each item came from.

Which label an item gets: each reviewer's latest label counts; an item every reviewer called `unsure`,
or that two reviewers called `real` and `fake`, is left out and counted. Its split is fixed by its
content hash (`train` for fine-tuning, `test` as the feedback holdout): the same upload lands in the
same split on every export and every host, whatever else was labelled, so a later run never tests on
what an earlier one trained on (as long as `loop.holdout_share` is unchanged). Two uploads of one
file are one item in one split.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.table import CONTRACT_NAME, FACES_NAME
from dfguard.feedback import QUALITY_KEYS, PredictionStore

SUMMARY_NAME = "summary.json"
CROPS_DIR = "crops"
TRAIN, HOLDOUT = "train", "test"  # the split names training and evaluation read
FEEDBACK_METHOD = "feedback"  # the `method` of a fake whose reviewer named no manipulation kind


@dataclass(frozen=True)
class ExportSummary:
    out_dir: str
    items: int  # items in the dataset
    faces: int
    by_split: dict[str, int]  # items per split
    by_label: dict[str, int]  # items per label
    unsure: int  # labelled items left out: every reviewer said unsure
    disagreements: int  # labelled items left out: reviewers said real and fake
    no_crops: int  # labelled items left out: no face crop stored (a purged or failed write)
    fingerprint: str  # sha256 of the face table: the dataset version the loop's lineage records

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def consensus_labels(reviewer_labels: pd.DataFrame) -> pd.DataFrame:
    """One row per labelled prediction from each reviewer's latest label
    (`PredictionStore.reviewer_labels`): `outcome` is the agreed `real` or `fake`, `unsure` (nobody
    decided) or `disagreement`, with the deciding reviewers, their manipulation kind and the time of
    the latest label."""
    columns = ["prediction_id", "outcome", "reviewers", "manipulation", "labelled_at"]
    if reviewer_labels.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for prediction_id, group in reviewer_labels.groupby("prediction_id", sort=False):
        decided = group[group["label"].isin(("real", "fake"))]
        said = set(decided["label"])
        outcome = "unsure" if not said else "disagreement" if len(said) > 1 else said.pop()
        kinds = decided["manipulation"].dropna()
        rows.append(
            {
                "prediction_id": prediction_id,
                "outcome": outcome,
                "reviewers": ",".join(sorted(set(decided["reviewer"]))),
                "manipulation": kinds.iloc[-1] if len(kinds) else None,
                "labelled_at": group["created_at"].max(),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def holdout_split(content_sha256: str, holdout_share: float) -> str:
    """`test` (the feedback holdout) or `train`, fixed by the content hash alone."""
    position = int(hashlib.sha256(f"dfguard-split|{content_sha256}".encode()).hexdigest()[:8], 16) / 2**32
    return HOLDOUT if position < holdout_share else TRAIN


def export_feedback(
    store: PredictionStore, out_dir: str | Path, contract: PreprocessingContract, holdout_share: float
) -> ExportSummary:
    """Write the feedback dataset of every labelled prediction in `store` to `out_dir` (replaced whole,
    through a sibling folder, so a reader never sees half of it). `contract` is the one the crops
    were made with: the served model's, which the predictor applies."""
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"loop.holdout_share must lie strictly between 0 and 1, got {holdout_share}")
    consensus = consensus_labels(store.reviewer_labels())
    counts = consensus["outcome"].value_counts()
    decided = consensus[consensus["outcome"].isin(("real", "fake"))]
    out = Path(out_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / CROPS_DIR).mkdir(parents=True)
    rows, seen_content, no_crops = [], set(), 0
    for label in decided.itertuples(index=False):
        record = store.get(label.prediction_id)
        if record is None or record["content_sha256"] in seen_content:
            continue
        kept = [crop for crop in record["crops"] if Path(crop["path"]).is_file()]
        if not kept:
            no_crops += 1
            continue
        seen_content.add(record["content_sha256"])
        rows += _face_rows(
            record, label, kept, holdout_split(record["content_sha256"], holdout_share), partial
        )
    faces = pd.DataFrame(rows, columns=_COLUMNS)
    faces.to_parquet(partial / FACES_NAME, index=False)
    (partial / CONTRACT_NAME).write_text(contract.to_json())
    items = faces.drop_duplicates("video_id")
    summary = ExportSummary(
        out_dir=str(out),
        items=len(items),
        faces=len(faces),
        by_split={str(k): int(v) for k, v in items["split"].value_counts().sort_index().items()},
        by_label={str(k): int(v) for k, v in items["label"].value_counts().sort_index().items()},
        unsure=int(counts.get("unsure", 0)),
        disagreements=int(counts.get("disagreement", 0)),
        no_crops=no_crops,
        fingerprint=hashlib.sha256((partial / FACES_NAME).read_bytes()).hexdigest(),
    )
    (partial / SUMMARY_NAME).write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return summary


def read_summary(dataset_dir: str | Path) -> ExportSummary:
    path = Path(dataset_dir) / SUMMARY_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `dfguard feedback export` first")
    return ExportSummary(**json.loads(path.read_text()))


# faces.parquet's columns (as `dfguard extract` writes them) and the provenance of each item.
_COLUMNS = [
    "video_id",
    "path",
    "label",
    "method",
    "split",
    "frame",
    "timestamp_s",
    "track_id",
    "box",
    "score",
    *QUALITY_KEYS,
    "crop",
    "subject",
    "prediction_id",
    "content_sha256",
    "media_kind",
    "reviewers",
    "model_version",
    "predicted_probability",
    "predicted_at",
    "labelled_at",
]


def _face_rows(
    record: dict[str, Any], label: Any, crops: list[dict[str, Any]], split: str, folder: Path
) -> list[dict[str, Any]]:
    """One row per stored face crop of a labelled prediction; the crop file is copied in under its
    content hash (a face seen in two items is one file)."""
    faces_by_frame = {(face["frame_index"], face["track_id"]): face for face in record["faces"]}
    times = {frame["frame_index"]: frame["timestamp_s"] for frame in record["frames"]}
    rows = []
    for crop in crops:
        name = f"{CROPS_DIR}/{crop['crop_sha256']}.png"
        if not (folder / name).exists():
            shutil.copyfile(crop["path"], folder / name)
        face = faces_by_frame.get((crop["frame_index"], crop["track_id"]), {})
        rows.append(
            {
                "video_id": record["prediction_id"],
                "path": f"feedback/{record['content_sha256']}",
                "label": label.outcome,
                "method": "real"
                if label.outcome == "real"
                else (label.manipulation if isinstance(label.manipulation, str) else FEEDBACK_METHOD),
                "split": split,
                "frame": int(crop["frame_index"] if crop["frame_index"] is not None else 0),
                "timestamp_s": float(times.get(crop["frame_index"], 0.0) or 0.0),
                "track_id": int(crop["track_id"] if crop["track_id"] is not None else 0),
                "box": face.get("box"),
                "score": np.nan,  # the face detector's confidence is not stored with a prediction
                # Per item, not per face: the store keeps the medians of an item's faces.
                **{key: record["quality"].get(key) for key in QUALITY_KEYS},
                "crop": name,
                "subject": True,
                "prediction_id": record["prediction_id"],
                "content_sha256": record["content_sha256"],
                "media_kind": record["media_kind"],
                "reviewers": label.reviewers,
                "model_version": record["model_version"],
                "predicted_probability": record["probability"],
                "predicted_at": record["created_at"],
                "labelled_at": label.labelled_at,
            }
        )
    return rows
