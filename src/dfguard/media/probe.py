"""The facts a manifest records about a media file, read by decoding one frame to prove it is readable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2

from dfguard.media.images import animation_length, read_animation, read_image
from dfguard.media.kinds import MediaError, MediaKind, media_decoder
from dfguard.media.video import upright_bgr, video_timing


@dataclass(frozen=True)
class MediaInfo:
    kind: MediaKind
    width: int
    height: int
    fps: float  # 0 for images
    frame_count: int  # 1 for images
    duration_s: float  # 0 for images


def probe_media(path: Path) -> MediaInfo:
    """Read the facts a manifest needs, decoding one frame to prove the file is really readable."""
    decoder = media_decoder(path)
    if decoder == "image":
        return _probe_image(path)
    if decoder == "animation":
        animation = read_animation(path, [0], animation_length(path))
        size = (animation.width, animation.height)
        return MediaInfo("video", *size, animation.fps, animation.frame_count, animation.duration_s)
    try:
        return _probe_video_opencv(path)
    except MediaError as first:
        try:
            return _probe_video_pyav(path)
        except MediaError as second:
            raise MediaError(f"unreadable video: {first}; {second}") from second


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
