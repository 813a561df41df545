"""Reading facts about media files and writing videos; shared by corpus, ingest and extraction.

OpenCV is tried first because it is fast; PyAV is the fallback for containers OpenCV cannot open.
Pillow reads what neither does well: animated images, GIF, and the HEIF and AVIF photos of phones. All
are wrapped so a bad file raises `MediaError` with a reason a person can act on, never a crash deeper in.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from dfguard.animation import (
    DECODE_ERRORS,
    Animation,
    AnimationTooLargeError,
    animated_frame_count,
    decode_animation,
)

# Pillow opens HEIF (an iPhone's photos) through this plugin; it reads AVIF by itself.
pillow_heif.register_heif_opener()

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".webp",
        ".ppm",
        ".pgm",
        ".tif",
        ".tiff",
        ".gif",
        ".heic",
        ".heif",
        ".avif",
    }
)

MediaKind = Literal["video", "image"]
# How a file's frames are read: one picture, an animated image's frames (judged as a video) or a video.
Decoder = Literal["image", "animation", "video"]

# Images whose header declares more pixels than this are refused before anything is decoded: a PNG of
# a few kilobytes can declare a 50000x50000 canvas (a decompression bomb: 7.5 GB once decoded). 120
# megapixels admits the largest common camera photos (108 MP phone sensors; an 8K frame is 33 MP).
MAX_IMAGE_PIXELS = 120_000_000
# Every frame of an animated image is decoded (each draws over the last), about 10 ns a pixel here: a
# 20-second 720p GIF at 25 fps holds 460 megapixels; this limit is a few seconds of decoding.
MAX_ANIMATION_PIXELS = 1_000_000_000


class MediaError(ValueError):
    """A file that cannot be used as media, with the reason."""


@dataclass(frozen=True)
class MediaInfo:
    kind: MediaKind
    width: int
    height: int
    fps: float  # 0 for images
    frame_count: int  # 1 for images
    duration_s: float  # 0 for images


def media_kind(path: Path) -> MediaKind | None:
    """The kind of media a file name promises, or None for an unsupported extension."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return None


# The opening bytes of the image formats OpenCV decodes (WebP: "RIFF", a size, then "WEBP").
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"P5", b"P6")
GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
# HEIF and AVIF photos are ISO media files like MP4: the brand of their "ftyp" box tells them apart.
PHOTO_BRANDS = frozenset({b"heic", b"heix", b"mif1", b"avif"})
MATROSKA_SIGNATURE = b"\x1a\x45\xdf\xa3"  # MKV and WebM


def _read_head(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(16)


def _decoded_by_pillow(head: bytes) -> bool:
    """GIF (OpenCV 4.14 reads it, but not every build does), HEIF (OpenCV cannot) and AVIF (OpenCV
    ignores its orientation, so a phone's portrait would lie on its side)."""
    return head.startswith(GIF_SIGNATURES) or (head[4:8] == b"ftyp" and head[8:12] in PHOTO_BRANDS)


def _looks_like_image(head: bytes) -> bool:
    return (
        head.startswith(IMAGE_SIGNATURES)
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or _decoded_by_pillow(head)
    )


def _looks_like_video(head: bytes) -> bool:
    """MP4, MOV and M4V (an "ftyp" box first), Matroska and AVI."""
    return (
        head[4:8] == b"ftyp"
        or head.startswith(MATROSKA_SIGNATURE)
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    )


def media_decoder(path: Path) -> Decoder:
    """How to read a media file worth trying to decode; MediaError for an unsupported extension, a
    path that is not a regular file (a folder, a device) and an empty file.

    The extension admits a file; its content decides how it is decoded: a photo saved as `.mp4` is
    judged as the photo it is (read as a video it would be one frame, too short to judge), a video
    saved as `.jpg` as a video, and an image with more than one frame as the clip it plays.
    """
    kind = media_kind(path)
    if kind is None:
        raise MediaError(f"unsupported file type {path.suffix or '(none)'!r}")
    if not path.is_file():
        raise MediaError("not a regular file")
    if path.stat().st_size == 0:
        raise MediaError("empty file")
    head = _read_head(path)
    if _looks_like_image(head):
        return "animation" if animated_frame_count(path) > 1 else "image"
    if _looks_like_video(head):
        return "video"
    return kind


def probe_media(path: Path) -> MediaInfo:
    """Read the facts a manifest needs, decoding one frame to prove the file is really readable."""
    decoder = media_decoder(path)
    if decoder == "image":
        return _probe_image(path)
    if decoder == "animation":
        animation = read_animation(path, [0])
        size = (animation.width, animation.height)
        return MediaInfo("video", *size, animation.fps, animation.frame_count, animation.duration_s)
    try:
        return _probe_video_opencv(path)
    except MediaError as first:
        try:
            return _probe_video_pyav(path)
        except MediaError as second:
            raise MediaError(f"unreadable video: {first}; {second}") from second


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as 8-bit BGR, turned upright by its EXIF orientation (as a phone shows it);
    MediaError for a corrupt file or one whose header declares more than MAX_IMAGE_PIXELS. An animated
    image gives its first frame."""
    _refuse_oversized(path)
    if _decoded_by_pillow(_read_head(path)):
        image = _decode_with_pillow(path)
    else:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise MediaError("unreadable image (corrupt or not an image)")
    return image


def _decode_with_pillow(path: Path) -> np.ndarray | None:
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except DECODE_ERRORS:
        return None
    return cv2.cvtColor(np.asarray(upright), cv2.COLOR_RGB2BGR)


def read_animation(path: Path, indices: list[int]) -> Animation:
    """The frames numbered `indices` of an animated image (fewer when the file is damaged before the
    last of them), with the length and timing of what decodes; MediaError for a file over
    MAX_IMAGE_PIXELS a frame or MAX_ANIMATION_PIXELS in all, or whose first frame does not decode."""
    _refuse_oversized(path)
    try:
        return decode_animation(path, indices, MAX_ANIMATION_PIXELS)
    except AnimationTooLargeError as err:
        raise MediaError(str(err)) from err
    except DECODE_ERRORS as err:
        # Pillow's message can name the absolute path: reports must not differ between machines.
        raise MediaError(f"unreadable animated image ({str(err).replace(str(path), path.name)})") from err


def _refuse_oversized(path: Path) -> None:
    """Check the size an image's header declares, without decoding its pixels (PIL opens lazily)."""
    limit = f"the {MAX_IMAGE_PIXELS / 1e6:.0f}-megapixel limit"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:
        # PIL's own ceiling (twice its warning size) lies above ours, so this file is over ours too.
        raise MediaError(f"image declares more pixels than {limit}") from err
    except (OSError, ValueError, SyntaxError):
        return  # a header PIL cannot parse: OpenCV's decoding decides whether it is an image at all
    if width * height > MAX_IMAGE_PIXELS:
        raise MediaError(f"{width}x{height} px image ({width * height / 1e6:.0f} megapixels) is over {limit}")


def _probe_image(path: Path) -> MediaInfo:
    # The size of the pixels the faces are read from: upright, so a phone's portrait is tall.
    height, width = read_image(path).shape[:2]
    return MediaInfo("image", width, height, 0.0, 1, 0.0)


def _probe_video_opencv(path: Path) -> MediaInfo:
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise MediaError("OpenCV cannot open it")
        ok, frame = capture.read()
        if not ok or frame is None:
            raise MediaError("OpenCV decodes no frame")
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        height, width = frame.shape[:2]
    finally:
        capture.release()
    if fps <= 0 or frames <= 0:
        raise MediaError("OpenCV reports no frame rate or frame count")
    return MediaInfo("video", width, height, fps, frames, frames / fps)


def _probe_video_pyav(path: Path) -> MediaInfo:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise MediaError("PyAV decodes no frame")
            fps, frames, duration = video_timing(container, path)
            height, width = upright_bgr(first).shape[:2]
    except av.FFmpegError as err:
        # The message names the absolute path; drop it so reports are the same on every machine.
        reason = str(err).replace(f": '{path}'", "").replace(str(path), path.name)
        raise MediaError(f"PyAV cannot decode it ({reason})") from err
    if fps <= 0 or frames <= 0:
        raise MediaError("PyAV reports no frame rate or frame count")
    return MediaInfo("video", width, height, fps, frames, duration or frames / fps)


def upright_bgr(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as BGR, turned as its display matrix says: a phone stores a portrait video as
    landscape frames plus a rotation. OpenCV turns its frames the same way by itself."""
    image = frame.to_ndarray(format="bgr24")
    quarter_turns = round(frame.rotation / 90) % 4  # counter-clockwise, as np.rot90 turns
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def video_timing(container: av.container.InputContainer, path: Path) -> tuple[float, int, float]:
    """Frame rate, frame count and duration (s; 0 when undeclared) of the first video stream of an open
    container, as its header declares them. A container that declares no length (a browser's
    MediaRecorder WebM, a saved live stream) has its frames counted from the packets of a second,
    separate reading of `path`, without decoding them (one packet per frame). Raises av.FFmpegError."""
    stream = container.streams.video[0]
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
    if duration <= 0 and container.duration:
        duration = container.duration / av.time_base
    frames = stream.frames or round(duration * fps)
    if not frames:
        with av.open(str(path)) as counting:
            frames = sum(1 for packet in counting.demux(counting.streams.video[0]) if packet.size)
    return fps, frames, duration


def write_video(frames: Iterable[np.ndarray], path: Path, fps: int, crf: int, preset: str = "fast") -> int:
    """Encode BGR frames as H.264 MP4 at constant rate factor `crf`; return the number of frames.

    OpenCV cannot write H.264 on this stack, and the CRF is what datasets such as FaceForensics++ vary
    (c23, c40), so PyAV's libx264 is used. The file is written beside its target and renamed into
    place, so an interrupted build never leaves a truncated video that looks complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial.mp4")
    count = 0
    with av.open(str(partial), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for frame in frames:
            if count == 0:
                stream.height, stream.width = frame.shape[:2]
            video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
            container.mux(stream.encode(video_frame))
            count += 1
        container.mux(stream.encode())
    if count == 0:
        partial.unlink(missing_ok=True)
        raise MediaError(f"no frames to write to {path}")
    partial.replace(path)
    return count
