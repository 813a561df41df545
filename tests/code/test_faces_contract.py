"""The preprocessing contract: a stable hash that every setting changes, and its JSON round trip."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from dfguard.config import ExtractConfig
from dfguard.faces.contract import PreprocessingContract

CONFIG = ExtractConfig(
    frames_train=16,
    frames_val=16,
    frames_test=32,
    min_score=0.9,
    search_face_px=40,
    min_face_px=64,
    detect_face_px=20,
    margin=1.3,
    crop_size=224,
    crop_format="png",
)


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "-other"
    first, *rest = value
    return (_changed(first), *rest)


def test_hash_is_pinned() -> None:
    # The same settings must give the same hash in every process and on every machine: models carry
    # it and caches are keyed by it. Change this value only when the contract is meant to change.
    assert PreprocessingContract.from_config(CONFIG).hash == "5e27a542ab9fe411"


def test_settings_that_do_not_shape_crops_leave_the_hash_alone() -> None:
    other = dataclasses.replace(CONFIG, out_dir="elsewhere", workers=7, device="cpu", jpeg_quality=50)
    assert PreprocessingContract.from_config(other).hash == PreprocessingContract.from_config(CONFIG).hash


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(PreprocessingContract)])
def test_every_field_changes_the_hash(name: str) -> None:
    contract = PreprocessingContract.from_config(CONFIG)
    changed = dataclasses.replace(contract, **{name: _changed(getattr(contract, name))})
    assert changed.hash != contract.hash


def test_json_round_trip_keeps_the_hash_and_catches_tampering() -> None:
    contract = PreprocessingContract.from_config(dataclasses.replace(CONFIG, crop_format="jpg"))
    assert contract.crop_jpeg_quality == 95
    text = contract.to_json()
    assert PreprocessingContract.from_json(text) == contract
    with pytest.raises(ValueError, match="does not match"):
        PreprocessingContract.from_json(text.replace('"crop_size": 224', '"crop_size": 256'))


def test_media_key_depends_on_the_items_own_frame_count_only() -> None:
    contract = PreprocessingContract.from_config(CONFIG)
    more_test_frames = PreprocessingContract.from_config(dataclasses.replace(CONFIG, frames_test=48))
    assert more_test_frames.hash != contract.hash
    assert more_test_frames.media_key(16) == contract.media_key(16)
    assert contract.media_key(16) != contract.media_key(32)
    assert contract.frames_for("test") == 32 and contract.frames_for("test", "image") == 1
    with pytest.raises(ValueError, match="unknown split"):
        contract.frames_for("holdout")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"detector": "retinaface"}, "detector"),
        ({"crop_format": "webp"}, "crop_format"),
        ({"frames_val": 0}, "at least 1"),
        ({"search_face_px": 80}, "detect_face_px <= search_face_px <= min_face_px"),
        ({"margin": 0.8}, "margin"),
    ],
)
def test_invalid_settings_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PreprocessingContract.from_config(dataclasses.replace(CONFIG, **change))
