"""Every dataset layout, ingested from tiny real files: labels, methods, identities, splits, skips."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from dfguard.ingest import IngestResult

Ingest = Callable[..., IngestResult]


def assert_identity_disjoint(manifest: pd.DataFrame) -> None:
    """No person (as source or target) appears in two splits."""
    owner: dict[str, str] = {}
    for row in manifest.itertuples():
        for name in (row.source_identity, row.target_identity):
            if name:
                assert owner.setdefault(name, row.split) == row.split, f"{name} is in two splits"


def by_path(result: IngestResult) -> dict[str, dict]:
    return result.manifest.set_index("path").to_dict("index")


def skipped_reasons(result: IngestResult) -> dict[str, str]:
    return dict(zip(result.skipped["path"], result.skipped["reason"], strict=True))


# --- FaceForensics++ -------------------------------------------------------------------------------

FFPP_ORIGINALS = [f"original_sequences/youtube/c23/videos/{i:03d}.mp4" for i in range(6)] + [
    "original_sequences/youtube/raw/videos/006.mp4",
    "original_sequences/actors/c23/videos/01__meeting_serious.mp4",
    "original_sequences/actors/c23/videos/02__walking_outside.mp4",
]
FFPP_FAKES = [
    "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4",
    "manipulated_sequences/Deepfakes/c23/videos/003_000.mp4",
    "manipulated_sequences/FaceShifter/c23/videos/001_002.mp4",
    "manipulated_sequences/Face2Face/c40/videos/004_005.mp4",
    "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__meeting_serious__YVGY8LOK.mp4",
]
FFPP_BAD = {
    "manipulated_sequences/FaceSwap/c23/videos/garbage.mp4": "cannot parse FaceForensics++ fake name",
    "manipulated_sequences/DeepFakeDetection/c23/videos/01_02.mp4": "cannot parse DeepFakeDetection",
    "manipulated_sequences/Deepfakes/masks/videos/000_003.mp4": "not a FaceForensics++ compression folder",
    "original_sequences/youtube/c23/000.mp4": "not a FaceForensics++ path",
}


@pytest.fixture
def ffpp(media) -> None:
    for rel in [*FFPP_ORIGINALS, *FFPP_FAKES, *FFPP_BAD]:
        media.video(rel)


def test_ffpp_without_official_splits(ffpp, ingest: Ingest) -> None:
    result = ingest()
    rows = by_path(result)
    assert len(rows) == len(FFPP_ORIGINALS) + len(FFPP_FAKES)
    assert set(result.manifest["dataset"]) == {"ffpp"}

    real = rows["original_sequences/youtube/c23/videos/000.mp4"]
    assert (real["label"], real["method"], real["source_identity"], real["target_identity"]) == (
        "real",
        "original",
        "000",
        "000",
    )
    assert rows["original_sequences/youtube/raw/videos/006.mp4"]["compression"] == "c0"
    actor = rows["original_sequences/actors/c23/videos/01__meeting_serious.mp4"]
    assert (actor["source_identity"], actor["target_identity"]) == ("actor:01", "actor:01")

    fake = rows["manipulated_sequences/Deepfakes/c23/videos/000_003.mp4"]
    assert (fake["label"], fake["method"], fake["compression"]) == ("fake", "Deepfakes", "c23")
    assert (fake["target_identity"], fake["source_identity"]) == ("000", "003")
    assert fake["original_path"] == "original_sequences/youtube/c23/videos/000.mp4"
    # No c40 original of 004 was downloaded, so there is no file to point at.
    assert rows["manipulated_sequences/Face2Face/c40/videos/004_005.mp4"]["original_path"] == ""

    dfd = rows["manipulated_sequences/DeepFakeDetection/c23/videos/01_02__meeting_serious__YVGY8LOK.mp4"]
    assert (dfd["method"], dfd["target_identity"], dfd["source_identity"]) == (
        "DeepFakeDetection",
        "actor:01",
        "actor:02",
    )
    assert dfd["original_path"] == "original_sequences/actors/c23/videos/01__meeting_serious.mp4"

    reasons = skipped_reasons(result)
    assert set(reasons) == set(FFPP_BAD)
    for rel, reason in FFPP_BAD.items():
        assert reason in reasons[rel]
    assert_identity_disjoint(result.manifest)
    assert set(result.manifest["split"]) == {"train", "val", "test"}


def test_ffpp_official_splits_pin_videos_and_their_fakes(ffpp, media, ingest: Ingest) -> None:
    official = {"train": [["000", "003"], ["006", "007"]], "val": [["001", "002"]], "test": [["004", "005"]]}
    for split, pairs in official.items():  # beside the videos: sidecars, not reported as skipped
        media.text(f"{split}.json", json.dumps(pairs))
    result = ingest(ffpp_splits_dir=str(media.root))
    split_of = result.manifest.set_index("path")["split"]
    expected = {
        "original_sequences/youtube/c23/videos/000.mp4": "train",
        "original_sequences/youtube/c23/videos/003.mp4": "train",
        "original_sequences/youtube/raw/videos/006.mp4": "train",
        "manipulated_sequences/Deepfakes/c23/videos/000_003.mp4": "train",
        "manipulated_sequences/Deepfakes/c23/videos/003_000.mp4": "train",
        "original_sequences/youtube/c23/videos/001.mp4": "val",
        "manipulated_sequences/FaceShifter/c23/videos/001_002.mp4": "val",
        "original_sequences/youtube/c23/videos/005.mp4": "test",
        "manipulated_sequences/Face2Face/c40/videos/004_005.mp4": "test",
    }
    assert {rel: split_of[rel] for rel in expected} == expected
    assert set(skipped_reasons(result)) == set(FFPP_BAD)
    assert_identity_disjoint(result.manifest)


def test_ffpp_missing_split_file_is_a_clear_error(ffpp, tmp_path: Path, ingest: Ingest) -> None:
    with pytest.raises(FileNotFoundError, match=r"train\.json"):
        ingest(ffpp_splits_dir=str(tmp_path / "nowhere"))


# --- Celeb-DF --------------------------------------------------------------------------------------


def test_celebdf_with_test_list(media, ingest: Ingest) -> None:
    for rel in [
        "Celeb-real/id0_0000.mp4",
        "Celeb-real/id0_0001.mp4",
        "Celeb-real/id1_0000.mp4",
        "Celeb-real/id2_0000.mp4",
        "Celeb-real/id16_0000.mp4",
        "YouTube-real/00000.mp4",
        "YouTube-real/00001.mp4",
        "Celeb-synthesis/id0_id16_0000.mp4",
        "Celeb-synthesis/id1_id2_0000.mp4",
        "Celeb-synthesis/badname.mp4",
        "Celeb-real/nested/id3_0000.mp4",
    ]:
        media.video(rel)
    media.text(
        "List_of_testing_videos.txt",
        "1 YouTube-real/00001.mp4\n0 Celeb-synthesis/id1_id2_0000.mp4\n\n1 YouTube-real/99999.mp4\n",
    )
    result = ingest()
    rows = by_path(result)
    assert len(rows) == 9
    assert set(result.manifest["dataset"]) == {"celebdf"}
    assert rows["Celeb-real/id0_0001.mp4"]["source_identity"] == "celeb:id0"
    assert rows["YouTube-real/00000.mp4"]["target_identity"] == "youtube:00000"
    fake = rows["Celeb-synthesis/id0_id16_0000.mp4"]
    assert (fake["label"], fake["method"], fake["target_identity"], fake["source_identity"]) == (
        "fake",
        "Celeb-synthesis",
        "celeb:id0",
        "celeb:id16",
    )
    assert fake["original_path"] == "Celeb-real/id0_0000.mp4"
    assert fake["compression"] == "unknown"

    # Listed videos are pinned to test, and so is everyone linked to them.
    for rel in ["YouTube-real/00001.mp4", "Celeb-synthesis/id1_id2_0000.mp4", "Celeb-real/id1_0000.mp4"]:
        assert rows[rel]["split"] == "test"
    assert rows["Celeb-real/id2_0000.mp4"]["split"] == "test"
    assert_identity_disjoint(result.manifest)

    reasons = skipped_reasons(result)
    assert set(reasons) == {"Celeb-synthesis/badname.mp4", "Celeb-real/nested/id3_0000.mp4"}
    assert "cannot parse Celeb-DF fake name" in reasons["Celeb-synthesis/badname.mp4"]
    assert "not a Celeb-DF path" in reasons["Celeb-real/nested/id3_0000.mp4"]


# --- DFDC ------------------------------------------------------------------------------------------


def test_dfdc_with_two_parts(media, ingest: Ingest) -> None:
    parts = {
        "dfdc_train_part_0": {
            "aaa.mp4": {"label": "REAL", "split": "train"},
            "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
            "ccc.mp4": {"label": "REAL", "split": "train"},
            "missing.mp4": {"label": "FAKE", "split": "train", "original": "ccc.mp4"},
        },
        "dfdc_train_part_1": {
            "ddd.mp4": {"label": "REAL", "split": "train"},
            "eee.mp4": {"label": "FAKE", "split": "train", "original": "ddd.mp4"},
            "fff.mp4": {"label": "FAKE", "split": "train", "original": "gone.mp4"},
            "ggg.mp4": {"label": "MAYBE", "split": "train"},
        },
    }
    for part, records in parts.items():
        media.text(f"{part}/metadata.json", json.dumps(records))
        for name in records:
            if name != "missing.mp4":
                media.video(f"{part}/{name}")
    media.video("dfdc_train_part_1/unlisted.mp4")
    media.video("loose.mp4")

    result = ingest()
    rows = by_path(result)
    assert sorted(rows) == [
        "dfdc_train_part_0/aaa.mp4",
        "dfdc_train_part_0/bbb.mp4",
        "dfdc_train_part_0/ccc.mp4",
        "dfdc_train_part_1/ddd.mp4",
        "dfdc_train_part_1/eee.mp4",
        "dfdc_train_part_1/fff.mp4",
    ]
    assert set(result.manifest["dataset"]) == {"dfdc"}
    real = rows["dfdc_train_part_0/aaa.mp4"]
    assert (real["label"], real["method"], real["source_identity"], real["target_identity"]) == (
        "real",
        "original",
        "aaa",
        "aaa",
    )
    fake = rows["dfdc_train_part_0/bbb.mp4"]
    assert (fake["label"], fake["method"], fake["source_identity"], fake["target_identity"]) == (
        "fake",
        "DFDC",
        "",
        "aaa",
    )
    assert fake["original_path"] == "dfdc_train_part_0/aaa.mp4"
    assert fake["split"] == real["split"]
    orphan = rows["dfdc_train_part_1/fff.mp4"]
    assert (orphan["target_identity"], orphan["original_path"]) == ("gone", "")
    assert_identity_disjoint(result.manifest)

    reasons = skipped_reasons(result)
    assert reasons == {
        "dfdc_train_part_0/missing.mp4": "listed in metadata.json but missing on disk",
        "dfdc_train_part_1/ggg.mp4": "metadata.json gives no REAL or FAKE label for it",
        "dfdc_train_part_1/unlisted.mp4": "not listed in a metadata.json",
        "loose.mp4": "not listed in a metadata.json",
    }


# --- generic real/ and fake/ -----------------------------------------------------------------------


def test_generic_with_images_and_videos_in_nested_folders(media, ingest: Ingest) -> None:
    media.video("real/alice/a1.mp4")
    media.image("real/alice/holiday/a2.png")
    media.image("real/bob/b1.jpg")
    media.video("real/carol.mp4")
    media.video("fake/FaceSwap/x1.mp4")
    media.image("fake/FaceSwap/batch2/x2.png")
    media.image("fake/loose.jpg")
    media.video("extra/other.mp4")
    media.text("real/bob/notes.txt", "not media")

    result = ingest()
    rows = by_path(result)
    assert len(rows) == 7
    assert set(result.manifest["dataset"]) == {"generic"}
    assert rows["real/alice/holiday/a2.png"]["target_identity"] == "alice"
    assert rows["real/alice/holiday/a2.png"]["media_kind"] == "image"
    assert rows["real/alice/holiday/a2.png"]["split"] == rows["real/alice/a1.mp4"]["split"]
    assert rows["real/carol.mp4"]["source_identity"] == "carol"
    assert rows["real/carol.mp4"]["media_kind"] == "video"
    assert (rows["fake/FaceSwap/batch2/x2.png"]["method"], rows["fake/loose.jpg"]["method"]) == (
        "FaceSwap",
        "unknown",
    )
    assert rows["fake/loose.jpg"]["target_identity"] == "loose"
    assert rows["fake/loose.jpg"]["source_identity"] == ""
    assert set(result.manifest.loc[result.manifest["label"] == "real", "method"]) == {"original"}
    image = rows["real/bob/b1.jpg"]
    assert (image["width"], image["height"], image["frame_count"], image["fps"]) == (64, 48, 1, 0.0)
    assert_identity_disjoint(result.manifest)
    assert skipped_reasons(result) == {
        "extra/other.mp4": "outside the real/ and fake/ folders",
        "real/bob/notes.txt": "unsupported file type '.txt'",
    }


# --- demo corpus -----------------------------------------------------------------------------------


def _clip(path: str, label: str, method: str, source: str, target: str, original: str = "") -> dict:
    return {
        "path": path,
        "label": label,
        "method": method,
        "source_identity": source,
        "target_identity": target,
        "compression": path.split("/")[2],
        "original_path": original,
    }


def test_demo_corpus_uses_its_index(media, ingest: Ingest) -> None:
    ann = "original_sequences/demo/c23/videos/ann__00.mp4"
    ben = "original_sequences/demo/c28/videos/ben__00.mp4"
    swap = "manipulated_sequences/FaceSwap/c23/videos/ann__00__ben.mp4"
    blend = "manipulated_sequences/SelfBlend/c28/videos/ben__00.mp4"
    ghost = "manipulated_sequences/SelfBlend/c23/videos/ghost__00.mp4"
    clips = [
        _clip(ann, "real", "original", "ann", "ann"),
        _clip(ben, "real", "original", "ben", "ben"),
        _clip(swap, "fake", "FaceSwap", "ben", "ann", ann),
        _clip(blend, "fake", "SelfBlend", "ben", "ben", ben),
        _clip(ghost, "fake", "SelfBlend", "ghost", "ghost"),
    ]
    for clip in clips[:4]:
        media.video(clip["path"])
    unlisted = "original_sequences/demo/c23/videos/zed__00.mp4"
    media.video(unlisted)
    media.image("contact_sheet.jpg")
    media.text("face_truth.parquet", "not really parquet")
    media.text("resolved_config.json", "{}")
    index = {"name": "t", "version": 1, "clips": clips, "extras": ["face_truth.parquet", "contact_sheet.jpg"]}
    media.text("dfguard_corpus.json", json.dumps(index))

    result = ingest()
    rows = by_path(result)
    assert sorted(rows) == sorted([ann, ben, swap, blend])
    assert set(result.manifest["dataset"]) == {"demo"}  # detected before the FF++-shaped folders
    assert (rows[swap]["method"], rows[swap]["source_identity"], rows[swap]["target_identity"]) == (
        "FaceSwap",
        "ben",
        "ann",
    )
    assert (rows[swap]["compression"], rows[swap]["original_path"]) == ("c23", ann)
    assert rows[blend]["compression"] == "c28"
    assert rows[ann]["split"] == rows[ben]["split"] == rows[swap]["split"]
    assert_identity_disjoint(result.manifest)
    assert skipped_reasons(result) == {
        unlisted: "not listed in dfguard_corpus.json",
        ghost: "listed in dfguard_corpus.json but missing on disk",
    }


def test_demo_index_with_a_bad_label_is_refused(media, ingest: Ingest) -> None:
    clip = _clip("original_sequences/demo/c23/videos/a.mp4", "maybe", "original", "a", "a")
    media.text("dfguard_corpus.json", json.dumps({"clips": [clip]}))
    with pytest.raises(ValueError, match="label 'maybe'"):
        ingest()


# --- detection -------------------------------------------------------------------------------------


def test_missing_dataset_folder_raises(tmp_path: Path, ingest: Ingest) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest(dataset_dir=str(tmp_path / "absent"))


def test_unrecognised_folder_names_the_layouts_looked_for(media, ingest: Ingest) -> None:
    media.video("clips/a.mp4")
    with pytest.raises(ValueError, match="matches no known dataset layout") as error:
        ingest()
    for name in ("demo", "ffpp", "celebdf", "dfdc", "generic"):
        assert f"{name}:" in str(error.value)


def test_forced_layout_is_used_and_unknown_names_are_refused(media, ingest: Ingest) -> None:
    media.video("real/a/a.mp4")
    media.text("metadata.json", "{}")  # would be detected as DFDC
    assert set(ingest(layout="generic").manifest["dataset"]) == {"generic"}
    with pytest.raises(ValueError, match="unknown layout 'kinetics'"):
        ingest(layout="kinetics")
