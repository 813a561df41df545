"""Bad files are reported and never crash ingest; outputs are complete, typed and deterministic."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from dfguard.config import RESOLVED_CONFIG_NAME
from dfguard.ingest import IngestResult
from dfguard.ingest.manifest import MANIFEST_COLUMNS

Ingest = Callable[..., IngestResult]


@pytest.fixture
def messy(media, tmp_path: Path) -> Path:
    """A generic tree with every kind of file ingest must refuse, report or ignore."""
    root = media.root
    good = media.video("real/alice/good.mp4")
    media.image("real/alice/face.png")
    media.video("fake/FaceSwap/swap.mp4")
    media.corrupt("real/alice/corrupt.mp4")
    media.corrupt("real/alice/corrupt.jpg")
    media.empty("real/alice/empty.mp4")
    media.text("real/alice/notes.txt", "a note")
    (root / "real/bob").mkdir()
    shutil.copyfile(good, root / "real/bob/copy.mp4")
    (root / "real/bob/link_inside.mp4").symlink_to(good)
    outside = media.video("../outside/elsewhere.mp4")  # a valid video beside, not inside, the dataset
    (root / "real/bob/link_outside.mp4").symlink_to(outside)
    (root / "real/linked_folder").symlink_to(outside.parent, target_is_directory=True)
    (root / "real/bob/dangling.mp4").symlink_to(root / "real/bob/gone.mp4")
    # Never reported: hidden files and folders, and sidecar files.
    media.text("real/.DS_Store")
    media.video("real/alice/._good.mp4")
    media.text(".git/config")
    media.text("real/alice/resolved_config.json", "{}")
    media.text("fake/train.json", "[]")
    return root


REPORTED = {
    "real/alice/corrupt.mp4": "unreadable video",
    "real/alice/corrupt.jpg": "unreadable image",
    "real/alice/empty.mp4": "empty file",
    "real/alice/notes.txt": "unsupported file type '.txt'",
    "real/bob/copy.mp4": "duplicate of real/alice/good.mp4",
    "real/bob/link_inside.mp4": "duplicate of real/alice/good.mp4",
    "real/bob/link_outside.mp4": "symlink pointing outside the dataset folder",
    "real/linked_folder": "symlink to a folder (not followed)",
    "real/bob/dangling.mp4": "not a regular file",
}


def test_bad_files_are_reported_with_reasons(messy: Path, ingest: Ingest) -> None:
    result = ingest()
    assert sorted(result.manifest["path"]) == [
        "fake/FaceSwap/swap.mp4",
        "real/alice/face.png",
        "real/alice/good.mp4",
    ]
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"], strict=True))
    assert set(reasons) == set(REPORTED)
    for rel, reason in REPORTED.items():
        assert reason in reasons[rel], rel
    on_disk = pd.read_csv(result.skipped_path, keep_default_na=False)
    assert on_disk.equals(result.skipped)


def test_outputs_are_complete_and_typed(messy: Path, ingest: Ingest) -> None:
    result = ingest()
    out_dir = result.manifest_path.parent
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        ["manifest.parquet", "skipped.csv", "summary.json", RESOLVED_CONFIG_NAME]
    )
    stored = pd.read_parquet(result.manifest_path)
    pd.testing.assert_frame_equal(stored, result.manifest)
    assert list(stored.columns) == list(MANIFEST_COLUMNS)
    for column, dtype in MANIFEST_COLUMNS.items():
        values = stored[column]
        if dtype == "str":
            assert all(isinstance(value, str) for value in values), column
        else:
            assert values.dtype == dtype, column
    assert stored["video_id"].str.fullmatch(r"[0-9a-f]{20}").all()
    assert list(stored["path"]) == sorted(stored["path"])

    summary = json.loads(result.summary_path.read_text())
    assert summary["layout"] == "generic"
    assert summary["files"] == 3
    assert summary["skipped"] == len(REPORTED)
    assert summary["counts"]["label"] == {"fake": 1, "real": 2}
    assert summary["counts"]["media_kind"] == {"image": 1, "video": 2}
    assert sum(summary["counts"]["split"].values()) == 3
    assert sum(summary["identities_per_split"].values()) == 2  # alice, and the fake "swap"
    assert "elapsed_s" not in summary  # tracked in git: no timings, or every run dirties the clone
    resolved = json.loads((out_dir / RESOLVED_CONFIG_NAME).read_text())
    assert resolved["dataset_dir"] == str(messy)


def test_clean_dataset_writes_a_header_only_skipped_report(media, ingest: Ingest) -> None:
    media.video("real/a/a.mp4")
    result = ingest()
    assert result.skipped_path.read_text().strip() == "path,reason"
    assert result.skipped.empty


def test_same_input_gives_byte_identical_manifest(messy: Path, tmp_path: Path, ingest: Ingest) -> None:
    first = ingest(out_dir=str(tmp_path / "one"), workers=1)
    second = ingest(out_dir=str(tmp_path / "two"), workers=3)
    assert first.manifest_path.read_bytes() == second.manifest_path.read_bytes()
    assert first.skipped_path.read_bytes() == second.skipped_path.read_bytes()


def test_output_folder_inside_the_dataset_is_not_ingested(media, ingest: Ingest) -> None:
    media.video("real/a/a.mp4")
    out_dir = media.root / "manifests"
    ingest(out_dir=str(out_dir))
    again = ingest(out_dir=str(out_dir))
    assert list(again.manifest["path"]) == ["real/a/a.mp4"]
    assert again.skipped.empty


def test_rerun_replaces_outputs_without_leftovers(media, ingest: Ingest) -> None:
    media.video("real/a/a.mp4")
    first = ingest()
    media.video("real/b/b.mp4")
    second = ingest()
    assert len(pd.read_parquet(second.manifest_path)) == 2
    assert not [p for p in os.listdir(first.manifest_path.parent) if p.startswith(".")]


def test_folder_with_no_usable_media_still_writes_outputs(media, ingest: Ingest) -> None:
    media.corrupt("real/a/a.mp4")
    result = ingest()
    assert result.manifest.empty
    assert list(pd.read_parquet(result.manifest_path).columns) == list(MANIFEST_COLUMNS)
    assert list(result.skipped["path"]) == ["real/a/a.mp4"]
