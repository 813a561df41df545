"""Frames in, faces out: real people in generated videos, found, tracked, aligned and measured."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dfguard.config import ExtractConfig
from dfguard.faces.align import template_points
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.detector import FaceDetector
from dfguard.faces.extract import FACE_TOO_SMALL, NO_FACE, OK, build_detector, extract_faces, extract_media
from dfguard.media import MediaError

CONTRACT = PreprocessingContract.from_config(ExtractConfig(crop_size=160))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return build_detector(CONTRACT, "cpu")


def _eyes_in_crop(crop: np.ndarray) -> np.ndarray:
    (face,) = FaceDetector(min_face_px=60).detect(crop)
    return face.landmarks[:2]


def test_two_people_get_one_track_each(face_scenes, detector: FaceDetector) -> None:
    frames = [
        face_scenes.frame([("obama", (85 + 4 * i, 125), 90), ("biden", (235 - 4 * i, 115), 84 + i)])[0]
        for i in range(5)
    ]
    result = extract_faces(frames, detector, CONTRACT, indices=[0, 3, 6, 9, 12], timestamps_s=[0, 1, 2, 3, 4])
    assert [frame.status for frame in result.frames] == [OK] * 5
    assert [frame.faces for frame in result.frames] == [2] * 5
    by_track: dict[int, list[float]] = {}
    for face in result.faces:
        by_track.setdefault(face.track_id, []).append(float(face.face.box[0]))
    assert sorted(by_track) == [0, 1]
    sides = {track: np.mean(xs) < 160 for track, xs in by_track.items()}
    assert sorted(sides.values()) == [False, True]  # one track on each side, none mixed
    for track, xs in by_track.items():
        assert all((x < 160) == sides[track] for x in xs)
    assert {face.frame_index for face in result.faces} == {0, 3, 6, 9, 12}
    face = result.faces[0]
    assert face.crop.shape == (160, 160, 3)
    assert face.face_px >= CONTRACT.min_face_px
    assert face.quality.sharpness > 0 and 0 < face.quality.brightness < 255


def test_faces_below_the_minimum_size_are_reported_not_kept(face_scenes, detector: FaceDetector) -> None:
    small = face_scenes.frame([("obama", (160, 120), 46)])[0]  # between search and minimum size
    tiny = face_scenes.frame([("obama", (160, 120), 14)])[0]  # too small to be searched for at all
    result = extract_faces([small, small, tiny], detector, CONTRACT)
    assert [frame.status for frame in result.frames] == [FACE_TOO_SMALL, FACE_TOO_SMALL, NO_FACE]
    assert result.faces == []


def test_a_sideways_video_is_turned_and_its_faces_aligned_upright(
    face_scenes, detector: FaceDetector
) -> None:
    upright, (truth,) = face_scenes.frame([("biden", (160, 120), 100)])
    sideways = np.ascontiguousarray(np.rot90(upright))  # as a phone video whose rotation flag was lost
    result = extract_faces([sideways] * 3, detector, CONTRACT)
    assert result.quarter_turns == 3  # turned back clockwise
    assert [frame.status for frame in result.frames] == [OK] * 3
    # The box is in the sideways frame's own coordinates: biden's face centre, rotated.
    centre = (result.faces[0].face.box[:2] + result.faces[0].face.box[2:]) / 2
    assert centre == pytest.approx([truth[:, 1].mean(), 319 - truth[:, 0].mean()], abs=12)
    eyes = _eyes_in_crop(result.faces[0].crop)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 4 and eyes[0, 0] < eyes[1, 0]
    assert np.abs(eyes - template_points(160, CONTRACT.margin)[:2]).max() < 8


def test_a_rolled_face_is_found_and_aligned_upright(face_scenes, detector: FaceDetector) -> None:
    frame = face_scenes.frame([("grace_hopper", (160, 120), 100)], roll_deg=20)[0]
    result = extract_faces([frame], detector, CONTRACT)
    assert result.quarter_turns == 0 and len(result.faces) == 1
    eyes = _eyes_in_crop(result.faces[0].crop)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 4


def test_a_video_without_faces_gives_no_face_frames(
    tmp_path: Path, face_scenes, detector: FaceDetector
) -> None:
    rng = np.random.default_rng(1)
    frames = [cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), np.uint8), (0, 0), 3) for _ in range(8)]
    path = face_scenes.video(tmp_path / "empty_room.mp4", frames)
    result = extract_media(path, 4, detector, CONTRACT)
    assert [frame.status for frame in result.frames] == [NO_FACE] * 4
    assert [frame.frame_index for frame in result.frames] == [1, 3, 5, 7]
    assert set(result.seconds) == {"decode", "detect", "align"}


def test_an_image_is_one_frame_and_its_jpeg_quality_is_measured(
    tmp_path: Path, face_scenes, detector: FaceDetector
) -> None:
    frame = face_scenes.frame([("obama", (160, 120), 100)])[0]
    path = tmp_path / "upload.jpg"
    cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, 60])
    result = extract_media(path, 16, detector, CONTRACT)
    assert len(result.frames) == 1 and result.frames[0].status == OK
    assert result.faces[0].quality.jpeg_quality == pytest.approx(60, abs=3)


@pytest.mark.parametrize(("name", "content"), [("broken.mp4", b"\x00garbage" * 500), ("empty.mp4", b"")])
def test_unreadable_media_raises(tmp_path: Path, detector: FaceDetector, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError):
        extract_media(path, 16, detector, CONTRACT)


def test_frames_smaller_than_the_smallest_face_have_no_face_instead_of_crashing() -> None:
    from dfguard.faces.detector import FaceDetector

    detector = FaceDetector(min_face_px=64, min_score=0.8, detect_face_px=32)
    tiny = [np.full((50, 60, 3), 120, np.uint8), np.full((50, 60, 3), 90, np.uint8)]
    assert detector.detect_batch(tiny) == [[], []]
    assert detector.detect_batch([np.zeros((1, 1, 3), np.uint8)]) == [[]]
