"""`run_extract`: a manifest's items extracted in parallel, resumably, into tables, crops and a contract."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from dfguard.config import ExtractConfig
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.dataset import ExtractResult, run_extract


def _mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, face_scenes) -> tuple[Path, pd.DataFrame]:
    """Two real clips and a two-person clip (train), an empty room (val), a portrait image and a clip
    (test), a corrupt file (train), with a manifest listing them all."""
    root = tmp_path_factory.mktemp("faces-dataset")
    people = [("obama", "biden"), ("grace_hopper", None), ("biden", "luispedro"), ("luispedro", None)]
    items = []
    for k, (first, second) in enumerate(people):
        frames = []
        for i in range(10):
            placed = [(first, (110 + 3 * i, 120), 88)] + ([(second, (240, 115), 80)] if second else [])
            frames.append(face_scenes.frame(placed)[0])
        items.append((f"clips/clip{k}.mp4", ["train", "train", "test", "train"][k], frames))
    rng = np.random.default_rng(3)
    room = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), np.uint8), (0, 0), 4) for _ in range(10)]
    items.append(("clips/room.mp4", "val", room))
    rows = []
    for rel, split, frames in items:
        face_scenes.video(root / rel, frames)
        rows.append((rel, split, "video"))
    cv2.imwrite(str(root / "portrait.jpg"), face_scenes.frame([("obama", (160, 120), 110)])[0])
    (root / "broken.mp4").write_bytes(b"\x00garbage" * 400)
    rows += [("portrait.jpg", "test", "image"), ("broken.mp4", "train", "video")]
    manifest = pd.DataFrame(
        {
            "video_id": [hashlib.sha256((root / rel).read_bytes()).hexdigest()[:20] for rel, _, _ in rows],
            "path": [rel for rel, _, _ in rows],
            "label": "real",
            "method": "",
            "split": [split for _, split, _ in rows],
            "media_kind": [kind for _, _, kind in rows],
        }
    )
    return root, manifest


def _run(
    tmp_path: Path, dataset: tuple[Path, pd.DataFrame], manifest: pd.DataFrame | None = None, **settings
):
    root, full = dataset
    manifest_path = tmp_path / "manifest.parquet"
    (full if manifest is None else manifest).to_parquet(manifest_path, index=False)
    cfg = ExtractConfig(
        manifest_path=str(manifest_path),
        dataset_dir=str(root),
        out_dir=str(tmp_path / "faces"),
        frames_train=4,
        frames_val=4,
        frames_test=6,
        crop_size=96,
        workers=1,
    )
    return run_extract(dataclasses.replace(cfg, **settings), progress=False)


def test_extraction_writes_tables_crops_contract_and_failures(tmp_path: Path, dataset) -> None:
    result: ExtractResult = _run(tmp_path, dataset, workers=2)  # the spawned process pool
    manifest = dataset[1]
    assert (result.items, result.extracted, result.cached, result.failed) == (7, 7, 0, 1)

    failures = pd.read_csv(result.failures_table)
    assert failures["path"].tolist() == ["broken.mp4"] and failures["status"].tolist() == ["UNREADABLE"]
    assert str(dataset[0]) not in failures["reason"].item()  # the same report on every machine

    frames = pd.read_parquet(result.frames_table)
    per_item = frames.groupby("path")["frame"].count().to_dict()
    assert per_item == {f"clips/clip{k}.mp4": n for k, n in enumerate([4, 4, 6, 4])} | {
        "clips/room.mp4": 4,
        "portrait.jpg": 1,
    }
    assert set(frames.loc[frames["path"] == "clips/room.mp4", "status"]) == {"NO_FACE"}

    faces = pd.read_parquet(result.faces_table)
    tracks = faces.groupby("path")["track_id"].nunique().to_dict()
    assert tracks == {
        "clips/clip0.mp4": 2,
        "clips/clip1.mp4": 1,
        "clips/clip2.mp4": 2,
        "clips/clip3.mp4": 1,
        "portrait.jpg": 1,
    }
    assert len(faces) == result.faces == 2 * 4 + 4 + 2 * 6 + 4 + 1
    assert set(faces["split"]) == {"train", "test"} and set(faces["video_id"]) <= set(manifest["video_id"])
    for column in ("score", "face_px", "sharpness", "brightness", "blockiness", "timestamp_s"):
        assert faces[column].notna().all(), column
    assert all(
        len(box) == 4 and len(points) == 10
        for box, points in zip(faces["box"], faces["landmarks"], strict=True)
    )
    crops = [cv2.imread(str(result.out_dir / rel)) for rel in faces["crop"]]
    assert all(crop is not None and crop.shape == (96, 96, 3) for crop in crops)

    contract = PreprocessingContract.from_json(result.contract_path.read_text())
    assert contract.hash == result.contract_hash and contract.crop_size == 96
    assert result.stage_seconds.keys() == {"decode", "detect", "align", "write"}


def test_reruns_skip_what_is_done_and_redo_only_what_a_change_needs(tmp_path: Path, dataset) -> None:
    first = _run(tmp_path, dataset)
    before = _mtimes(first.out_dir)

    again = _run(tmp_path, dataset)
    assert (again.extracted, again.cached) == (0, 7)
    assert _mtimes(first.out_dir) == before  # not one file rewritten

    # More test frames: the test clip is redone; the test image (always one frame) and the rest are not.
    more = _run(tmp_path, dataset, frames_test=8)
    assert (more.extracted, more.cached) == (1, 6)
    frames = pd.read_parquet(more.frames_table)
    assert (frames["path"] == "clips/clip2.mp4").sum() == 8

    # A crop setting shapes every crop: everything is redone, and no crop of the old size remains.
    bigger = _run(tmp_path, dataset, frames_test=8, crop_size=112)
    assert (bigger.extracted, bigger.cached) == (7, 0)
    crop_files = list((bigger.out_dir / "crops").rglob("*.png"))
    assert len(crop_files) == bigger.faces
    assert {cv2.imread(str(p)).shape for p in crop_files} == {(112, 112, 3)}
    assert len(list((bigger.out_dir / ".cache").iterdir())) == 7  # old cache entries are gone


def test_items_removed_from_the_manifest_leave_the_tables_and_their_crops(tmp_path: Path, dataset) -> None:
    full = _run(tmp_path, dataset)
    manifest = dataset[1]
    gone = manifest.loc[manifest["path"] == "clips/clip0.mp4", "video_id"].item()
    assert (full.out_dir / "crops" / gone).is_dir()
    fewer = _run(tmp_path, dataset, manifest=manifest[manifest["video_id"] != gone])
    assert (fewer.items, fewer.extracted, fewer.cached) == (6, 0, 6)
    assert gone not in set(pd.read_parquet(fewer.faces_table)["video_id"])
    assert not (fewer.out_dir / "crops" / gone).exists()


def test_a_missing_manifest_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dfguard ingest"):
        run_extract(ExtractConfig(manifest_path=str(tmp_path / "none.parquet"), out_dir=str(tmp_path)))
