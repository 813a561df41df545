"""Frame sampling and reading: evenly spaced indices, seeking to the right frames, large frames shrunk,
bad files (corrupt, empty, decompression bombs) refused."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from dfguard.faces.frames import SEEK_GAP_FRAMES, read_sampled, sample_indices
from dfguard.media import (
    MAX_ANIMATION_PIXELS,
    MAX_IMAGE_PIXELS,
    MediaError,
    animation_length,
    probe_media,
    upright_bgr,
    write_video,
)

EXIF_ORIENTATION = 0x0112

BITS, CELL = 10, 16  # frame numbers up to 1023, one 16x16 black or white cell per bit


def _numbered_frame(number: int) -> np.ndarray:
    frame = np.zeros((CELL * 2, CELL * BITS // 2, 3), np.uint8)
    for bit in range(BITS):
        if number >> bit & 1:
            row, col = divmod(bit, BITS // 2)
            frame[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = 255
    return frame


def _read_number(frame: np.ndarray) -> int:
    number = 0
    for bit in range(BITS):
        row, col = divmod(bit, BITS // 2)
        cell = frame[row * CELL + 4 : (row + 1) * CELL - 4, col * CELL + 4 : (col + 1) * CELL - 4]
        number |= int(cell.mean() > 128) << bit
    return number


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 frames, each showing its own frame number: long enough that sampling must seek."""
    path = tmp_path_factory.mktemp("numbered") / "numbered.mp4"
    write_video((_numbered_frame(i) for i in range(600)), path, fps=25, crf=12, preset="ultrafast")
    return path


@pytest.mark.parametrize(("count", "n"), [(100, 16), (61, 16), (17, 16), (600, 2), (1000, 7)])
def test_sample_indices_are_evenly_spaced_segment_centres(count: int, n: int) -> None:
    indices = sample_indices(count, n)
    assert len(indices) == n == len(set(indices))
    assert indices[0] >= 0 and indices[-1] < count
    gaps = np.diff(indices)
    assert gaps.max() - gaps.min() <= 1
    assert abs(indices[0] - (count - 1 - indices[-1])) <= 1  # as far from the start as from the end


def test_short_videos_give_every_frame_and_empty_ones_none(numbered_video: Path) -> None:
    assert sample_indices(5, 16) == [0, 1, 2, 3, 4]
    assert sample_indices(0, 16) == []
    with pytest.raises(ValueError, match="at least one frame"):
        read_sampled(numbered_video, 0)


@pytest.mark.parametrize("backend", ["opencv", "pyav"])
@pytest.mark.parametrize("n", [2, 3, 16])
def test_the_sampled_frames_are_the_frames_asked_for(numbered_video: Path, backend: str, n: int) -> None:
    sampled = read_sampled(numbered_video, n, backends=(backend,))
    assert sampled.backend == backend
    assert sampled.frame_count == 600
    assert sampled.indices == sample_indices(600, n)
    assert [_read_number(frame) for frame in sampled.frames] == sampled.indices
    assert sampled.timestamps_s == pytest.approx([i / 25 for i in sampled.indices])


def test_a_recording_whose_container_declares_no_length_is_read(tmp_path: Path) -> None:
    """A browser's MediaRecorder writes WebM as a live stream: no duration, no frame count. Its frames
    are counted from the packets, then sampled as usual."""
    path = tmp_path / "recording.webm"
    with av.open(str(path), "w", options={"live": "1"}) as container:
        stream = container.add_stream("libvpx", rate=25)
        stream.width, stream.height, stream.pix_fmt = CELL * BITS // 2, CELL * 2, "yuv420p"
        stream.options = {"crf": "4", "b": "0"}
        for i in range(90):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_numbered_frame(i), format="bgr24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:  # the premise: nothing in the file says how long it is
        assert not container.streams.video[0].frames and container.duration is None
    sampled = read_sampled(path, 8)
    assert (sampled.frame_count, sampled.indices) == (90, sample_indices(90, 8))
    assert [_read_number(frame) for frame in sampled.frames] == sampled.indices
    info = probe_media(path)
    assert (info.frame_count, info.fps, info.duration_s) == (90, 25.0, 3.6)


@pytest.mark.parametrize("backend", ["opencv", "pyav"])
def test_a_phone_video_is_read_upright_by_either_backend(tmp_path: Path, backend: str) -> None:
    """A phone stores a portrait video as landscape frames plus a display rotation; OpenCV applies it by
    itself, so the PyAV fallback must too, or the same file would reach the face detector sideways."""
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = CELL * BITS // 2, CELL * 2, "yuv420p"
        stream.options = {"crf": "12"}
        stream.set_display_rotation(90)  # a quarter turn counter-clockwise to display
        for i in range(40):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_numbered_frame(i), format="bgr24")))
        container.mux(stream.encode())
    sampled = read_sampled(path, 4, backends=(backend,))
    assert sampled.backend == backend
    assert all(frame.shape == (CELL * BITS // 2, CELL * 2, 3) for frame in sampled.frames)
    assert [_read_number(np.rot90(frame, -1)) for frame in sampled.frames] == sampled.indices
    if backend == "pyav":  # the probe's fallback reports the upright size too
        with av.open(str(path)) as container:
            first = next(container.decode(video=0))
        assert upright_bgr(first).shape[:2] == (CELL * BITS // 2, CELL * 2)
    info = probe_media(path)
    assert (info.width, info.height) == (CELL * 2, CELL * BITS // 2)


def test_gaps_longer_than_a_keyframe_interval_are_sought(numbered_video: Path) -> None:
    assert max(np.diff(sample_indices(600, 2))) > SEEK_GAP_FRAMES  # so n=2 above took the seek path


def test_an_image_is_one_frame(tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), _numbered_frame(5))
    sampled = read_sampled(path, 16)
    assert (sampled.indices, sampled.backend, sampled.timestamps_s) == ([0], "image", [0.0])
    assert _read_number(sampled.frames[0]) == 5


def test_the_content_not_the_extension_decides_how_a_file_is_decoded(
    numbered_video: Path, tmp_path: Path
) -> None:
    """A photo saved as .mp4 would be a one-frame video, too short to judge; a clip saved as .jpg would
    be an unreadable image. Each is read as what it is."""
    photo = tmp_path / "photo.mp4"
    ok, encoded = cv2.imencode(".jpg", _numbered_frame(7), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    photo.write_bytes(encoded.tobytes())
    sampled = read_sampled(photo, 16)
    assert (sampled.backend, sampled.indices, _read_number(sampled.frames[0])) == ("image", [0], 7)
    assert probe_media(photo).kind == "image"

    clip = tmp_path / "clip.jpg"
    clip.write_bytes(numbered_video.read_bytes())
    sampled = read_sampled(clip, 3)
    assert sampled.backend == "opencv" and sampled.frame_count == 600
    assert [_read_number(frame) for frame in sampled.frames] == sample_indices(600, 3)
    assert probe_media(clip).kind == "video"


@pytest.mark.parametrize("extension", [".gif", ".webp", ".png"])
def test_an_animated_image_is_sampled_and_probed_like_a_video(tmp_path: Path, extension: str) -> None:
    """A looping GIF, an animated WebP and an APNG each play 40 numbered frames. Each is read as the
    video it plays: its own frames, timed by their delays (the last delay, 0, plays as 100 ms, as in
    browsers), not as one still image."""
    pictures = [Image.fromarray(_numbered_frame(number)) for number in range(40)]
    path = tmp_path / f"loop{extension}"
    delays_ms = [40] * 39 + [0]
    pictures[0].save(
        path, save_all=True, append_images=pictures[1:], duration=delays_ms, loop=0, lossless=True
    )
    duration_s = (39 * 40 + 100) / 1000

    sampled = read_sampled(path, 8)
    assert (sampled.backend, sampled.frame_count) == ("animation", 40)
    assert sampled.indices == sample_indices(40, 8)
    assert [_read_number(frame) for frame in sampled.frames] == sampled.indices
    assert sampled.fps == pytest.approx(40 / duration_s)
    info = probe_media(path)
    assert (info.kind, info.width, info.height, info.frame_count) == ("video", 80, 32, 40)
    assert info.duration_s == pytest.approx(duration_s)


def test_a_still_gif_is_an_image(tmp_path: Path) -> None:
    path = tmp_path / "still.gif"
    Image.fromarray(_numbered_frame(9)).save(path)
    sampled = read_sampled(path, 16)
    assert (sampled.backend, sampled.indices, _read_number(sampled.frames[0])) == ("image", [0], 9)
    assert probe_media(path).kind == "image"


@pytest.mark.parametrize(
    ("extension", "saved_as"), [(".heic", ".heic"), (".avif", ".avif"), (".heic", ".jpg")]
)
def test_heif_and_avif_photos_are_read_upright(tmp_path: Path, extension: str, saved_as: str) -> None:
    """An iPhone's photos are HEIF (OpenCV cannot decode it), and are often shared under a `.jpg` name;
    OpenCV decodes AVIF but ignores its orientation. Both come out upright, like the JPEG case below."""
    stored = np.zeros((120, 200, 3), np.uint8)
    stored[:, :40] = 255  # a white band on the stored image's left: the top once turned upright
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    encoded = tmp_path / f"portrait{extension}"
    Image.fromarray(stored).save(encoded, exif=exif.tobytes(), quality=95)
    path = encoded.rename(tmp_path / f"phone{saved_as}")
    frame = read_sampled(path, 1).frames[0]
    assert frame.shape == (200, 120, 3)
    assert frame[:30].mean() > 200 and frame[-100:].mean() < 30
    info = probe_media(path)
    assert (info.kind, info.width, info.height) == ("image", 120, 200)


def test_a_damaged_animation_gives_the_frames_before_the_damage_or_a_clear_refusal(tmp_path: Path) -> None:
    pictures = [Image.fromarray(_numbered_frame(number)) for number in range(40)]
    whole = tmp_path / "whole.gif"
    pictures[0].save(whole, save_all=True, append_images=pictures[1:], duration=40, loop=0)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.gif"
    truncated.write_bytes(data[: len(data) // 2])
    sampled = read_sampled(truncated, 8)
    assert 5 < sampled.frame_count < 40 and sampled.indices == sample_indices(sampled.frame_count, 8)
    assert [_read_number(frame) for frame in sampled.frames] == sampled.indices
    assert probe_media(truncated).frame_count == sampled.frame_count

    first_frame_cut = tmp_path / "cut.gif"
    first_frame_cut.write_bytes(data[:60])  # the header, the palette and part of frame 0
    with pytest.raises(MediaError, match="unreadable image") as refused:
        read_sampled(first_frame_cut, 8)
    assert str(tmp_path) not in str(refused.value)


def test_an_animation_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    # 4.5 kB declaring 300 frames on a 2000x2000 canvas: each frame draws one pixel, yet each is a
    # whole canvas once played, 1.2 gigapixels in all.
    screen = b"GIF89a" + struct.pack("<HHBBB", 2000, 2000, 0x80, 0, 0) + bytes([0, 0, 0, 255, 255, 255])
    one_pixel = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"  # LZW: clear, 0, end
    bomb = tmp_path / "bomb.gif"
    bomb.write_bytes(screen + one_pixel * 300 + b"\x3b")
    with Image.open(bomb) as premise:
        assert (premise.size, premise.n_frames) == ((2000, 2000), 300)
    # Damaged at its end, 20000 such frames (280 kB) cannot be counted in one go; counting them one
    # by one draws each, so it stops once past the limit instead of drawing all 20000.
    damaged = tmp_path / "damaged_bomb.gif"
    damaged.write_bytes(screen + one_pixel * 20_000 + b"\x2c\x00")
    with pytest.raises(struct.error), Image.open(damaged) as premise:
        _ = premise.n_frames
    assert animation_length(damaged) == MAX_ANIMATION_PIXELS // (2000 * 2000) + 1
    for read in (
        lambda: read_sampled(bomb, 16),
        lambda: probe_media(bomb),
        lambda: read_sampled(damaged, 16),
    ):
        with pytest.raises(MediaError, match="megapixel decoding limit for animated images"):
            read()


def test_a_phone_photo_is_read_and_probed_upright(tmp_path: Path) -> None:
    """A camera stores a portrait as a landscape JPEG plus an EXIF orientation; both the frames and the
    probed size (the manifest's resolution) must be the upright picture's."""
    stored = np.zeros((120, 200, 3), np.uint8)
    stored[:, :40] = 255  # a white band on the stored image's left: the top once turned upright
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "portrait.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    frame = read_sampled(path, 1).frames[0]
    assert frame.shape == (200, 120, 3)
    assert frame[:30].mean() > 200 and frame[-100:].mean() < 30
    info = probe_media(path)
    assert (info.width, info.height) == (120, 200)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corrupt.mp4", b"\x00\x01garbage" * 300, "unreadable video"),
        ("empty.mp4", b"", "empty file"),
        ("corrupt.jpg", b"not a jpeg" * 50, "unreadable image"),
        ("notes.txt", b"hello", "unsupported file type"),
    ],
)
def test_unreadable_files_raise_media_error_with_the_reason(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError, match=message):
        read_sampled(path, 16)


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and header declaring `width` x `height`, with no pixel data after it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [12_000, 60_000])  # over our limit; over PIL's own bomb limit too
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path: Path, side: int) -> None:
    assert side * side > MAX_IMAGE_PIXELS
    bomb = _png_header_only(tmp_path / "bomb.png", side, side)
    for read in (lambda: read_sampled(bomb, 16), lambda: probe_media(bomb)):
        with pytest.raises(MediaError, match="megapixel limit"):
            read()


def test_frames_over_the_pixel_budget_are_shrunk_and_say_by_how_much(
    tmp_path: Path, numbered_video: Path
) -> None:
    frame = _numbered_frame(37)  # 80 x 32 px
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), frame)
    for as_decoded in (read_sampled(image, 1), read_sampled(image, 1, max_pixels=None)):
        assert as_decoded.scale == 1.0 and np.array_equal(as_decoded.frames[0], frame)

    budget = 80 * 32 // 4
    shrunk = read_sampled(image, 1, max_pixels=budget)
    assert shrunk.scale == pytest.approx(0.5) and shrunk.frames[0].shape == (16, 40, 3)
    for backend in ("opencv", "pyav"):
        sampled = read_sampled(numbered_video, 3, backends=(backend,), max_pixels=budget)
        assert sampled.scale == pytest.approx(0.5), backend
        assert {frame.shape for frame in sampled.frames} == {(16, 40, 3)}, backend
        # Area averaging keeps each 16 px cell a readable 8 px one: the frames are still the right ones.
        enlarged = [cv2.resize(f, (80, 32), interpolation=cv2.INTER_NEAREST) for f in sampled.frames]
        assert [_read_number(f) for f in enlarged] == sampled.indices, backend
