"""Training data: the subject faces of a face dataset, with self-blended fakes made on the fly.

Each draw is one of three kinds: a real face, a fake face from the dataset (a manipulated clip's
subject), or a self-blend of a real face. A class-balanced sampler draws real and fake equally often,
and within the fakes, self-blends `sbi_share` of the time. A draw's augmentation and blend depend only
on (seed, epoch, position), so an epoch is reproducible, and a resumed run sees the same data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from dfguard.config import TrainConfig
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.crops import read_crop
from dfguard.training.sbi import self_blend
from dfguard.transforms import AugmentConfig, Preset, resize, train_transform

FACES_NAME = "faces.parquet"
CONTRACT_NAME = "contract.json"
REAL, DATASET_FAKE, SELF_BLEND = 0, 1, 2


def load_faces(faces_dir: str | Path, split: str) -> pd.DataFrame:
    """The subject faces of one split, with an integer `target` (1 = fake) and absolute crop paths."""
    folder = Path(faces_dir)
    table = folder / FACES_NAME
    if not table.is_file():
        raise FileNotFoundError(f"{table} does not exist: run `dfguard extract` first")
    faces = pd.read_parquet(table)
    if "subject" in faces:
        faces = faces[faces["subject"]]
    faces = faces[faces["split"] == split].reset_index(drop=True)
    unknown = set(faces["label"]) - {"real", "fake"}
    if unknown:
        raise ValueError(f"{table}: labels must be 'real' or 'fake', found {sorted(unknown)}")
    faces["target"] = (faces["label"] == "fake").astype(np.int64)
    faces["crop_path"] = [str(folder / crop) for crop in faces["crop"]]
    return faces


def load_contract(faces_dir: str | Path) -> PreprocessingContract:
    path = Path(faces_dir) / CONTRACT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the face dataset is incomplete")
    return PreprocessingContract.from_json(path.read_text())


class TrainingFaces(Dataset):
    """Index i of an epoch's draw list -> (image tensor, target). Draws are (kind, row) pairs."""

    def __init__(
        self, faces: pd.DataFrame, preset: Preset, augment: AugmentConfig, margin: float, seed: int
    ) -> None:
        self.paths = faces["crop_path"].tolist()
        self.preset, self.augment, self.margin, self.seed = preset, augment, margin, seed
        self.draws: list[tuple[int, int]] = []
        self.epoch = 0

    def set_draws(self, draws: list[tuple[int, int]], epoch: int) -> None:
        self.draws, self.epoch = draws, epoch

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        kind, row = self.draws[index]
        rng = np.random.default_rng((self.seed, self.epoch, index))
        crop = read_crop(self.paths[row])
        if kind == SELF_BLEND:
            crop = self_blend(crop, rng, margin=self.margin).image
        # Augmenting at the model's input size costs a fraction of doing it on the full crop.
        image = train_transform(resize(crop, self.preset.input_size), self.preset, self.augment, rng)
        return image, torch.tensor(float(kind != REAL))


def epoch_draws(faces: pd.DataFrame, cfg: TrainConfig, epoch: int) -> list[tuple[int, int]]:
    """`cfg.samples_per_epoch` class-balanced (kind, row) draws for one epoch."""
    reals = np.flatnonzero(faces["target"].to_numpy() == 0)
    fakes = np.flatnonzero(faces["target"].to_numpy() == 1) if cfg.use_dataset_fakes else np.array([], int)
    if len(reals) == 0:
        raise ValueError("the train split has no real faces: nothing to learn 'real' from")
    if len(fakes) == 0 and not cfg.sbi:
        raise ValueError("no fakes to train on: the train split has none and self-blends are off")
    rng = np.random.default_rng((cfg.seed, epoch, 1))
    n_fake = cfg.samples_per_epoch // 2
    n_real = cfg.samples_per_epoch - n_fake
    sbi_share = 1.0 if len(fakes) == 0 else (cfg.sbi_share if cfg.sbi else 0.0)
    is_sbi = rng.random(n_fake) < sbi_share
    draws = [(REAL, int(row)) for row in rng.choice(reals, n_real)]
    draws += [(SELF_BLEND, int(row)) for row in rng.choice(reals, int(is_sbi.sum()))]
    if (~is_sbi).any():
        draws += [(DATASET_FAKE, int(row)) for row in rng.choice(fakes, int((~is_sbi).sum()))]
    order = rng.permutation(len(draws))
    return [draws[i] for i in order]
