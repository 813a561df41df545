"""Training draws on a tiny face dataset made here: real/fake pairs, class balance, self-blend share,
SBI-only mode, fakes paired with their original frame, reproducible augmented samples."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dfguard.config import TrainConfig
from dfguard.faces.crops import read_crop
from dfguard.training.data import (
    DATASET_FAKE,
    NO_PARTNER,
    REAL,
    SELF_BLEND,
    TrainingFaces,
    clip_rows,
    epoch_draws,
    load_faces,
    person_ids,
    real_partners,
)
from dfguard.training.identity import UNKNOWN_PERSON
from dfguard.transforms import AugmentConfig, Preset, resize, to_batch


@pytest.fixture
def faces_dir(tmp_path: Path, face_dataset) -> Path:
    return face_dataset(tmp_path / "faces", videos_per_split=6, frames=3)


def _manifest(faces_dir: Path, tmp_path: Path) -> Path:
    """Each fake video `<split><v>` was made from the real video `<split><v-1>` (its original)."""
    faces = pd.read_parquet(faces_dir / "faces.parquet").drop_duplicates("video_id")
    rows = []
    for video_id, label in zip(faces["video_id"], faces["label"], strict=True):
        original = f"{video_id[:-1]}{int(video_id[-1]) - 1}.mp4" if label == "fake" else None
        rows.append({"video_id": video_id, "path": f"{video_id}.mp4", "original_path": original})
    path = tmp_path / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def test_fakes_are_paired_with_the_same_frame_of_their_original(faces_dir: Path, tmp_path: Path) -> None:
    faces = load_faces(faces_dir, "train")
    partners = real_partners(faces, _manifest(faces_dir, tmp_path))
    for row, partner in enumerate(partners):
        if faces.target[row] == 0:
            assert partner == NO_PARTNER
            continue
        fake_video = faces.video_id[row]
        assert faces.video_id[partner] == f"train{int(fake_video[-1]) - 1}"
        assert faces.frame[partner] == faces.frame[row] and faces.target[partner] == 0
    assert (real_partners(faces, "") == NO_PARTNER).all(), "no manifest: no known originals"


def test_draws_are_balanced_pairs_and_sbi_only_uses_no_dataset_fakes(faces_dir: Path, tmp_path: Path) -> None:
    faces = load_faces(faces_dir, "train")
    partners = real_partners(faces, _manifest(faces_dir, tmp_path))
    cfg = TrainConfig(samples_per_epoch=400, sbi_share=0.5)
    draws = epoch_draws(faces, partners, cfg, epoch=0)
    kinds = np.array([kind for kind, _ in draws])
    assert len(draws) == 400 and (kinds[0::2] == REAL).all() and (kinds[1::2] != REAL).all()
    assert 60 < (kinds == SELF_BLEND).sum() < 140, "about half the fakes are self-blends"
    for (_, real), (kind, fake) in zip(draws[0::2], draws[1::2], strict=True):
        assert faces.target[real] == 0 and kind in (SELF_BLEND, DATASET_FAKE)
        assert fake == real if kind == SELF_BLEND else fake != real and partners[fake] == real
    sbi_only = epoch_draws(faces, partners, TrainConfig(samples_per_epoch=400, use_dataset_fakes=False), 0)
    assert {kind for kind, _ in sbi_only} == {REAL, SELF_BLEND}
    assert epoch_draws(faces, partners, cfg, 3) == epoch_draws(faces, partners, cfg, 3)
    assert epoch_draws(faces, partners, cfg, 3) != epoch_draws(faces, partners, cfg, 4)


def test_no_real_faces_or_no_fakes_at_all_are_refused(faces_dir: Path) -> None:
    faces = load_faces(faces_dir, "train")
    partners = np.full(len(faces), NO_PARTNER)
    only_fakes = faces[faces.target == 1].reset_index(drop=True)
    with pytest.raises(ValueError, match="no real faces"):
        epoch_draws(only_fakes, partners[: len(only_fakes)], TrainConfig(), 0)
    only_reals = faces[faces.target == 0].reset_index(drop=True)
    with pytest.raises(ValueError, match="no fakes"):
        epoch_draws(only_reals, partners[: len(only_reals)], TrainConfig(sbi=False), 0)


def test_pairs_share_their_augmentation_and_samples_are_reproducible(faces_dir: Path) -> None:
    faces = load_faces(faces_dir, "train")
    cfg = TrainConfig(samples_per_epoch=64, use_dataset_fakes=False)
    # Flips only: a self-blend's pixels outside the face are its real partner's, so with the same flip
    # the two images agree on the crop's border and differ inside it.
    flips = AugmentConfig(p_colour=0, p_noise=0, p_blur=0, p_downscale=0, p_jpeg=0)
    dataset = TrainingFaces(faces, np.full(len(faces), NO_PARTNER), cfg, Preset(48), flips, margin=1.3)
    for pair in range(8):
        (real, real_target, *_), (fake, fake_target, *_) = dataset[(0, 2 * pair)], dataset[(0, 2 * pair + 1)]
        assert (real_target, fake_target) == (0.0, 1.0)
        assert torch.equal(real[:, :4], fake[:, :4]) and not torch.equal(real, fake)
    assert torch.equal(dataset[(2, 5)][0], dataset[(2, 5)][0])


@pytest.mark.parametrize("clip_length", [1, 3])
def test_a_self_blend_with_an_altered_background_pairs_with_the_altered_real(
    faces_dir: Path, clip_length: int
) -> None:
    faces = load_faces(faces_dir, "train")
    cfg = TrainConfig(samples_per_epoch=96, use_dataset_fakes=False, sbi_background_share=1.0)
    no_augmentation = AugmentConfig(p_flip=0, p_colour=0, p_noise=0, p_blur=0, p_downscale=0, p_jpeg=0)
    partners = np.full(len(faces), NO_PARTNER)
    dataset = TrainingFaces(faces, partners, cfg, Preset(48), no_augmentation, 1.3, clip_length)
    rows_of = clip_rows(faces, clip_length)
    for pair in range(8):
        (real, *_), (fake, *_) = dataset[(0, 2 * pair)], dataset[(0, 2 * pair + 1)]
        _, row = dataset.draws(0)[2 * pair]
        originals = to_batch([resize(read_crop(faces.crop_path[r]), 48) for r in rows_of[row]], Preset(48))
        # Every face of the real carries the colour change, and shares its border with the fake.
        for face, (real_face, fake_face) in enumerate(
            zip(real.reshape(originals.shape), fake.reshape(originals.shape), strict=True)
        ):
            assert not torch.allclose(real_face, originals[face])
            assert torch.equal(real_face[:, :4], fake_face[:, :4]) and not torch.equal(real_face, fake_face)


def test_blend_maps_mark_the_pasted_region_and_mirror_with_the_image(faces_dir: Path, tmp_path: Path) -> None:
    faces = load_faces(faces_dir, "train")
    partners = real_partners(faces, _manifest(faces_dir, tmp_path))
    no_augmentation = AugmentConfig(p_flip=0, p_colour=0, p_noise=0, p_blur=0, p_downscale=0, p_jpeg=0)
    cfg = TrainConfig(samples_per_epoch=64)
    plain = TrainingFaces(faces, partners, cfg, Preset(48), no_augmentation, margin=1.3)
    mirrored = TrainingFaces(faces, partners, cfg, Preset(48), replace(no_augmentation, p_flip=1), 1.3)
    kinds = [kind for kind, _ in plain.draws(0)]
    for position, kind in enumerate(kinds):
        image, target, blend_map, _ = plain[(0, position)]
        assert blend_map.shape == (48, 48) and blend_map.dtype == torch.float32
        if kind == REAL:
            assert target == 0.0 and not blend_map.any()
            continue
        assert target == 1.0 and 0 < blend_map.max() <= 1
        centre, corner = blend_map[20:28, 20:28].mean(), blend_map[:6, :6].mean()
        assert centre > 0.2 and corner == 0  # the inner face, never the crop's corner
        flipped_image, _, flipped_map, _ = mirrored[(0, position)]
        assert torch.equal(flipped_image, image.flip(-1))
        assert torch.equal(flipped_map, blend_map.flip(-1))
    assert {SELF_BLEND, DATASET_FAKE} <= set(kinds)


def test_real_faces_are_named_by_person_and_draws_carry_their_person(faces_dir: Path, tmp_path: Path) -> None:
    faces = load_faces(faces_dir, "train")
    # Real videos train0, train2 and train4: the first two show one person, the third is unnamed.
    identities = {"train0": "ann", "train2": "ann", "train4": "", "train1": "ann", "train3": "bob"}
    manifest = tmp_path / "people.parquet"
    table = pd.DataFrame({"video_id": list(identities), "target_identity": list(identities.values())})
    table.to_parquet(manifest)
    people = person_ids(faces, manifest)
    by_video = dict(zip(faces["video_id"], people, strict=True))
    assert by_video["train0"] == by_video["train2"] != UNKNOWN_PERSON
    assert by_video["train4"] == UNKNOWN_PERSON, "an unnamed real video"
    assert by_video["train1"] == by_video["train3"] == UNKNOWN_PERSON, "a fake's person is ambiguous"
    assert (person_ids(faces, "") == UNKNOWN_PERSON).all(), "no manifest: nobody is named"

    cfg = TrainConfig(samples_per_epoch=64)
    no_augmentation = AugmentConfig(p_flip=0, p_colour=0, p_noise=0, p_blur=0, p_downscale=0, p_jpeg=0)
    partners = np.full(len(faces), NO_PARTNER)
    dataset = TrainingFaces(faces, partners, cfg, Preset(32), no_augmentation, 1.3, people=people)
    kinds = set()
    for position, (kind, row) in enumerate(dataset.draws(0)):
        person = dataset[(0, position)][3]
        kinds.add(kind)
        # A self-blend is its real face's person; a dataset fake is nobody's.
        assert person == (UNKNOWN_PERSON if kind == DATASET_FAKE else people[row])
    assert kinds == {REAL, SELF_BLEND, DATASET_FAKE}


def test_clip_rows_are_consecutive_faces_of_one_track() -> None:
    faces = pd.DataFrame({"video_id": ["a"] * 5 + ["b"] * 2, "track_id": 0, "frame": [4, 0, 3, 1, 2, 7, 5]})
    clips = clip_rows(faces, 3)
    # Video a in frame order is rows 1, 3, 4, 2, 0; a clip starting near its end is moved earlier.
    assert clips[1].tolist() == [1, 3, 4] and clips[3].tolist() == [3, 4, 2]
    assert clips[2].tolist() == clips[0].tolist() == [4, 2, 0]
    # Video b has two faces (rows 6, 5 in frame order): its last one is repeated.
    assert clips[6].tolist() == clips[5].tolist() == [6, 5, 5]
    with pytest.raises(ValueError, match="at least one face"):
        clip_rows(faces, 0)


def test_clip_draws_apply_one_blend_and_augmentation_to_all_their_faces(faces_dir: Path) -> None:
    faces = load_faces(faces_dir, "train")
    cfg = TrainConfig(samples_per_epoch=64, use_dataset_fakes=False)
    no_augmentation = AugmentConfig(p_flip=0, p_colour=0, p_noise=0, p_blur=0, p_downscale=0, p_jpeg=0)
    partners = np.full(len(faces), NO_PARTNER)
    clips = TrainingFaces(faces, partners, cfg, Preset(48), no_augmentation, 1.3, clip_length=3)
    assert len(clips) == 20, "samples_per_epoch counts faces: 64 faces make 10 pairs of 3-face clips"
    rows_of = clip_rows(faces, 3)
    for position, (kind, row) in enumerate(clips.draws(0)):
        images, target, maps, _ = clips[(0, position)]
        assert images.shape == (3, 3, 48, 48) and maps.shape == (3, 48, 48)
        if kind == REAL:
            frames = [resize(read_crop(faces.crop_path[r]), 48) for r in rows_of[row]]
            assert target == 0 and torch.allclose(images, to_batch(frames, Preset(48)))
        else:
            assert target == 1 and maps[0].max() > 0
            assert torch.equal(maps[0], maps[1]) and torch.equal(maps[1], maps[2])
    flipping = TrainingFaces(faces, partners, cfg, Preset(48), replace(no_augmentation, p_flip=0.5), 1.3, 3)
    mirrored_clips = 0
    for position in range(len(clips)):
        images, plain = flipping[(1, position)][0], clips[(1, position)][0]
        if torch.equal(images, plain):
            continue
        # Mirrored as a whole, never face by face.
        assert torch.equal(images, torch.flip(plain, dims=[-1]))
        mirrored_clips += 1
    assert 0 < mirrored_clips < len(clips)
