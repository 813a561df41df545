"""The face dataset's files and how the later stages read them: one home for the names `dfguard
extract` writes (`faces/dataset.py`) and training, calibration, evaluation and the studies read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dfguard.faces.contract import PreprocessingContract

FACES_NAME = "faces.parquet"
FRAMES_NAME = "frames.parquet"
CONTRACT_NAME = "contract.json"


def read_faces(faces_dir: str | Path, split: str | None = None, subject_only: bool = False) -> pd.DataFrame:
    """The face table of a face dataset, with an integer `target` (1 = fake): every split, or one
    (`split`, re-indexed from 0); every face found, or only the faces of the person each item is about
    (`subject_only`, what training learns from; a table made without subject marking is all subject).
    Raises when the table is missing, a label is neither real nor fake, or `split` has no faces."""
    table = Path(faces_dir) / FACES_NAME
    if not table.is_file():
        raise FileNotFoundError(f"{table} does not exist: run `dfguard extract` first")
    every_split = pd.read_parquet(table)
    faces = every_split
    if subject_only and "subject" in faces:
        faces = faces[faces["subject"]]
    if split is not None:
        faces = faces[faces["split"] == split].reset_index(drop=True)
        if faces.empty:
            present = ", ".join(sorted(every_split["split"].unique())) or "none"
            raise ValueError(f"{table} has no faces in split {split!r} (splits with faces: {present})")
    unknown = set(faces["label"]) - {"real", "fake"}
    if unknown:
        raise ValueError(f"{table}: labels must be 'real' or 'fake', found {sorted(unknown)}")
    return faces.assign(target=(faces["label"] == "fake").astype(np.int64))


def read_contract(faces_dir: str | Path) -> PreprocessingContract:
    path = Path(faces_dir) / CONTRACT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the face dataset is incomplete")
    return PreprocessingContract.from_json(path.read_text())
