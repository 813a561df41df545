"""Training data: the subject faces of a face dataset, drawn in real/fake pairs, with self-blended fakes
made on the fly.

Every draw is a pair: a real face and a fake that differs from it (as far as the data allows) only by
the manipulation. The fake is either a self-blend of that very real face, or a dataset fake whose real
partner is the same frame of the original clip it was made from (the manifest's `original_path`; a
random real face where that is unknown). Pairs are class-balanced by construction, and both halves of
a pair get the same augmentation. Seeing each real image also as a fake is what stops a detector from
memorising the few training identities and calling every unfamiliar face fake (Shiohara & Yamasaki
train self-blends the same way).

A draw's augmentation and blend depend only on (seed, epoch, position), so an epoch is reproducible,
in any worker process, and a resumed run sees the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from dfguard.config import TrainConfig
from dfguard.corpus.manipulate import face_oval_mask
from dfguard.faces.align import template_points
from dfguard.faces.crops import read_crop
from dfguard.faces.table import read_faces
from dfguard.faces.tracks import track_keys
from dfguard.ingest.manifest import manifest_columns
from dfguard.training.identity import UNKNOWN_PERSON
from dfguard.training.sbi import self_blend, self_blend_real
from dfguard.transforms import AugmentConfig, Preset, hflip, resize, train_transform

REAL, DATASET_FAKE, SELF_BLEND = 0, 1, 2
NO_PARTNER = -1

Draw = tuple[int, int]  # (kind, row of the faces table)


def load_faces(faces_dir: str | Path, split: str) -> pd.DataFrame:
    """The subject faces of one split (`read_faces`), with absolute crop paths."""
    faces = read_faces(faces_dir, split, subject_only=True)
    faces["crop_path"] = [str(Path(faces_dir) / crop) for crop in faces["crop"]]
    return faces


def real_partners(faces: pd.DataFrame, manifest_path: str | Path) -> np.ndarray:
    """For each fake face, the row of its original clip's face at the nearest frame; NO_PARTNER for real
    faces and where the manifest (absent, or without `original_path`) does not say which clip that is."""
    partners = np.full(len(faces), NO_PARTNER, np.int64)
    path = Path(manifest_path) if manifest_path else None
    if path is None or not path.is_file():
        return partners
    manifest = pd.read_parquet(path)
    if "original_path" not in manifest:
        return partners
    video_of_path = dict(zip(manifest["path"], manifest["video_id"], strict=True))
    original_video = {
        video: video_of_path.get(original)
        for video, original in zip(manifest["video_id"], manifest["original_path"], strict=True)
    }
    rows = pd.DataFrame({"row": np.arange(len(faces)), "frame": faces["frame"].astype(np.int64)})
    fakes = rows[faces["target"].to_numpy() == 1].assign(
        video=faces.loc[faces["target"] == 1, "video_id"].map(original_video)
    )
    reals = rows[faces["target"].to_numpy() == 0].assign(video=faces.loc[faces["target"] == 0, "video_id"])
    matched = pd.merge_asof(
        fakes.dropna(subset=["video"]).sort_values("frame"),
        reals.rename(columns={"row": "partner"}).sort_values("frame"),
        on="frame",
        by="video",
        direction="nearest",
    ).dropna(subset=["partner"])
    partners[matched["row"].to_numpy()] = matched["partner"].to_numpy(np.int64)
    return partners


def person_ids(faces: pd.DataFrame, manifest_path: str | Path) -> np.ndarray:
    """For each real face, the index (0, 1, ...) of the person its video shows (the manifest's
    `target_identity`); UNKNOWN_PERSON for fakes and for videos the manifest does not name anyone in."""
    names = manifest_columns(str(manifest_path), faces["video_id"], ["target_identity"])["target_identity"]
    named = (names != "unknown").to_numpy() & (faces["target"].to_numpy() == 0)
    people = np.full(len(faces), UNKNOWN_PERSON, np.int64)
    people[named] = pd.factorize(names[named])[0]
    return people


def epoch_draws(
    faces: pd.DataFrame, partners: np.ndarray, cfg: TrainConfig, epoch: int, faces_per_draw: int = 1
) -> list[Draw]:
    """(real, fake) pairs for one epoch, flattened: positions 2k and 2k+1 hold pair k. There are
    `draws_per_epoch(cfg, faces_per_draw) // 2` pairs; within the fakes, self-blends are drawn
    `cfg.sbi_share` of the time."""
    targets = faces["target"].to_numpy()
    reals = np.flatnonzero(targets == 0)
    fakes = np.flatnonzero(targets == 1) if cfg.use_dataset_fakes else np.array([], np.int64)
    if len(reals) == 0:
        raise ValueError("the train split has no real faces: nothing to learn 'real' from")
    if len(fakes) == 0 and not cfg.sbi:
        raise ValueError("no fakes to train on: the train split has none and self-blends are off")
    rng = np.random.default_rng((cfg.seed, epoch, 1))
    n_pairs = draws_per_epoch(cfg, faces_per_draw) // 2
    sbi_share = 1.0 if len(fakes) == 0 else (cfg.sbi_share if cfg.sbi else 0.0)
    is_sbi = rng.random(n_pairs) < sbi_share
    pairs = [((REAL, row), (SELF_BLEND, row)) for row in rng.choice(reals, int(is_sbi.sum())).tolist()]
    if (~is_sbi).any():
        fake_rows = rng.choice(fakes, int((~is_sbi).sum()))
        known = partners[fake_rows]
        stand_ins = rng.choice(reals, len(fake_rows))
        real_rows = np.where(known == NO_PARTNER, stand_ins, known)
        pairs += [
            ((REAL, real), (DATASET_FAKE, fake))
            for real, fake in zip(real_rows.tolist(), fake_rows.tolist(), strict=True)
        ]
    return [draw for i in rng.permutation(len(pairs)) for draw in pairs[i]]


def draws_per_epoch(cfg: TrainConfig, faces_per_draw: int = 1) -> int:
    """`cfg.samples_per_epoch` counts faces, so a clip model (a draw is a clip of `faces_per_draw`
    faces) gets fewer, longer draws for about the same work per epoch. Always whole pairs."""
    return 2 * (cfg.samples_per_epoch // (2 * faces_per_draw))


def clip_rows(faces: pd.DataFrame, length: int) -> np.ndarray:
    """(N, length): for each row, the rows of `length` consecutive faces of its track (video_id and,
    where present, track_id) in frame order, starting at that row, or earlier where the track ends
    first. A track with fewer faces repeats its last one. `faces` must have a RangeIndex."""
    if length < 1:
        raise ValueError(f"a clip holds at least one face, got length {length}")
    clips = np.empty((len(faces), length), np.int64)
    for _, track in faces.groupby(track_keys(faces), sort=False):
        ordered = track.sort_values("frame").index.to_numpy()
        padded = np.r_[ordered, np.repeat(ordered[-1], max(0, length - ordered.size))]
        for position, row in enumerate(ordered):
            start = min(position, padded.size - length)
            clips[row] = padded[start : start + length]
    return clips


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, position) keys, so persistent loader workers learn the epoch from each key."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.epoch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, position) for position in range(self.size))

    def __len__(self) -> int:
        return self.size


class TrainingFaces(Dataset):
    """(epoch, position) -> (image tensor, target, blend map, person), position indexing `epoch_draws`
    of that epoch. With `clip_length` > 1 (clip models), a draw is the clip of that many consecutive
    faces starting at the drawn face (`clip_rows`), and images and maps gain a time axis after the batch
    one. `people` (from `person_ids`) names the person of each real face, which its self-blends keep;
    without it every draw is UNKNOWN_PERSON."""

    def __init__(
        self,
        faces: pd.DataFrame,
        partners: np.ndarray,
        cfg: TrainConfig,
        preset: Preset,
        augment: AugmentConfig,
        margin: float,
        clip_length: int = 1,
        people: np.ndarray | None = None,
    ) -> None:
        self.faces, self.partners, self.cfg = faces[["crop_path", "target"]], partners, cfg
        self.people = np.full(len(faces), UNKNOWN_PERSON, np.int64) if people is None else people
        self.preset, self.augment, self.margin = preset, augment, margin
        self.clip_length = clip_length
        self._clips = clip_rows(faces, clip_length) if clip_length > 1 else None
        self._no_flip = replace(augment, p_flip=0.0)
        self._oval: np.ndarray | None = None
        self._epoch, self._draws = -1, []

    def draws(self, epoch: int) -> list[Draw]:
        if epoch != self._epoch:
            self._epoch = epoch
            self._draws = epoch_draws(self.faces, self.partners, self.cfg, epoch, self.clip_length)
        return self._draws

    def __len__(self) -> int:
        return draws_per_epoch(self.cfg, self.clip_length)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        """(image, target, blend map, person): the map is the share of each input pixel that was pasted
        in, the target of models that also localise the manipulation (zeros for a real face)."""
        epoch, position = key
        kind, row = self.draws(epoch)[position]
        target = torch.tensor(float(kind != REAL))
        person = torch.tensor(int(self.people[row]))  # a self-blend's row is its real face's
        if self._clips is None:
            image, blend_map = self._sample(kind, row, epoch, position)
            return image, target, blend_map, person
        # Every face of a clip gets the same blend and augmentation (their generators are seeded by
        # the draw, not the face), as a manipulation is applied to a whole clip: what changes from face
        # to face then comes from the video itself, not from augmentation noise.
        faces = [self._sample(kind, clip_row, epoch, position) for clip_row in self._clips[row]]
        images, maps = zip(*faces, strict=True)
        return torch.stack(images), target, torch.stack(maps), person

    def _sample(self, kind: int, row: int, epoch: int, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One face of a draw: (image, blend map)."""
        crop = read_crop(self.faces["crop_path"].iat[row])
        size = self.preset.input_size
        if kind == SELF_BLEND:
            blend_rng = self._blend_rng(epoch, position)
            blend = self_blend(
                crop, blend_rng, margin=self.margin, background_share=self.cfg.sbi_background_share
            )
            crop = blend.image
            blend_map = cv2.resize(blend.mask, (size, size), interpolation=cv2.INTER_AREA)
        elif kind == DATASET_FAKE:
            blend_map = self._dataset_fake_map(size)
        else:
            # Pairs sit at positions 2k and 2k + 1. The real of a self-blend pair (of this very face, or
            # clip) is altered when its fake's blend put the change on the background.
            if self.cfg.sbi_background_share > 0 and self.draws(epoch)[position ^ 1][0] == SELF_BLEND:
                crop = self_blend_real(
                    crop, self._blend_rng(epoch, position ^ 1), self.cfg.sbi_background_share
                )
            blend_map = np.zeros((size, size), np.float32)
        # One augmentation per pair (position // 2): the pair then differs only by the manipulation.
        # The mirror is drawn here so the blend map mirrors with the image; the rest of the augmentation
        # leaves pixels where they are. Augmenting at the model's input size costs a fraction of doing
        # it on the full crop.
        pair_rng = np.random.default_rng((self.cfg.seed, epoch, position // 2))
        crop = resize(crop, size)
        if pair_rng.random() < self.augment.p_flip:
            crop, blend_map = hflip(crop), np.ascontiguousarray(blend_map[:, ::-1])
        image = train_transform(crop, self.preset, self._no_flip, pair_rng)
        return image, torch.from_numpy(blend_map)

    def _blend_rng(self, epoch: int, fake_position: int) -> np.random.Generator:
        """The generator of the self-blend drawn at `fake_position`: seeded by that draw, so its real
        partner can remake its real half, and every face of a clip gets the same blend."""
        return np.random.default_rng((self.cfg.seed, epoch, fake_position, 1))

    def _dataset_fake_map(self, size: int) -> np.ndarray:
        """Where a dataset fake was pasted is not recorded; face manipulations replace the inner face,
        which alignment puts at the template's oval, so that oval stands in for it."""
        if self._oval is None or self._oval.shape[0] != size:
            points = template_points(1, self.margin) * size
            self._oval = face_oval_mask(points, (size, size), np.random.default_rng(0)).astype(np.float32)
        return self._oval
