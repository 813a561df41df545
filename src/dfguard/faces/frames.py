"""Sample N evenly spaced frames from a video (or the one frame of an image) without decoding it all.

An animated image (GIF, WebP, APNG) is sampled like a video, through Pillow.

OpenCV reads first because it is fast; PyAV is the fallback for files OpenCV cannot open or whose
container declares no length (a browser's WebM recording: its frames are then counted from the
packets). Either way a file that yields no frame raises `MediaError` with the reasons, which callers
record as a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np

from dfguard.media import (
    Animation,
    MediaError,
    animation_length,
    media_decoder,
    read_animation,
    read_image,
    upright_bgr,
    video_timing,
)

Backend = Literal["opencv", "pyav"]
BACKENDS: tuple[Backend, ...] = ("opencv", "pyav")

# A seek restarts decoding at the previous keyframe, up to x264's default keyframe interval (250
# frames) back. For shorter gaps, decoding forward through them (grab, no colour conversion) is
# cheaper: on the 2-4 s demo clips, seeking to each of 16 frames costs 7x more than grabbing.
SEEK_GAP_FRAMES = 250

# Frames over this many pixels (a 4K UHD frame) are shrunk as they are read. Every face large enough
# to judge stays far above the model's input size, while the face detector's cost grows with the area:
# a 144-megapixel photo took 47 s and 4.2 GB unshrunk. 4K and smaller frames, every public deepfake
# dataset's, are left exactly as decoded.
MAX_FRAME_PIXELS = 3840 * 2160


@dataclass(frozen=True)
class SampledFrames:
    frames: list[np.ndarray]  # BGR, all the same size
    indices: list[int]  # frame number of each, from 0
    fps: float  # 0 for an image
    frame_count: int  # frames the video really has, as far as reading showed; 1 for an image
    backend: str  # "opencv", "pyav", "animation" or "image"
    scale: float  # frame pixels per source pixel: below 1 when large frames were shrunk

    @property
    def timestamps_s(self) -> list[float]:
        return [index / self.fps if self.fps > 0 else 0.0 for index in self.indices]


def _shrink_scale(width: int, height: int, max_pixels: int | None) -> float:
    """The factor that brings a frame to at most `max_pixels` (None: no limit); 1 for frames within it."""
    if max_pixels is None:
        return 1.0
    return min(1.0, (max_pixels / (width * height)) ** 0.5)


def _fit(frame: np.ndarray, max_pixels: int | None) -> np.ndarray:
    # The scale depends on the area only, so a video's rotation metadata cannot change it.
    scale = _shrink_scale(frame.shape[1], frame.shape[0], max_pixels)
    if scale == 1.0:
        return frame
    return cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def sample_indices(frame_count: int, n: int) -> list[int]:
    """`n` evenly spaced frame numbers: the middle frame of each of `n` equal segments.

    Centres rather than segment starts, so the first and last frames (often fades or black) are not
    favoured. A video with fewer than `n` frames gives all of them.
    """
    if frame_count <= 0 or n <= 0:
        return []
    if n >= frame_count:
        return list(range(frame_count))
    return [int((i + 0.5) * frame_count / n) for i in range(n)]


def read_sampled(
    path: Path, n: int, backends: tuple[Backend, ...] = BACKENDS, max_pixels: int | None = MAX_FRAME_PIXELS
) -> SampledFrames:
    """Read `n` evenly spaced frames of a video or an animated image, or the single frame of an image,
    each shrunk to at most `max_pixels` (None: as decoded).

    Raises MediaError (unsupported, empty, corrupt, no decodable frame) naming what each backend said.
    """
    if n < 1:
        raise ValueError(f"at least one frame must be sampled, got {n}")
    decoder = media_decoder(path)
    if decoder == "image":
        image = read_image(path)
        scale = _shrink_scale(image.shape[1], image.shape[0], max_pixels)
        return SampledFrames([_fit(image, max_pixels)], [0], 0.0, 1, "image", scale)
    if decoder == "animation":
        return _read_animation(path, n, max_pixels)
    readers = {"opencv": _read_opencv, "pyav": _read_pyav}
    errors = []
    for backend in backends:
        try:
            return readers[backend](path, n, max_pixels)
        except MediaError as err:
            errors.append(f"{backend}: {err}")
    raise MediaError("unreadable video (" + "; ".join(errors) + ")")


def _read_animation(path: Path, n: int, max_pixels: int | None) -> SampledFrames:
    played: list[Animation] = []
    length = animation_length(path)

    def read(indices: list[int]) -> tuple[list[np.ndarray], int | None]:
        animation = read_animation(path, indices, length)
        played.append(animation)
        short = animation.frame_count if len(animation.frames) < len(indices) else None
        return [_fit(frame, max_pixels) for frame in animation.frames], short

    frames, indices, frame_count = _read_counted(read, length, n)
    animation = played[-1]
    scale = _shrink_scale(animation.width, animation.height, max_pixels)
    return SampledFrames(frames, indices, animation.fps, frame_count, "animation", scale)


# A reader of the given frame numbers: returns the frames read and, when it ran out of frames before
# the last one, the number of frames the video really has.
IndexReader = Callable[[list[int]], tuple[list[np.ndarray], int | None]]


def _read_counted(read: IndexReader, frame_count: int, n: int) -> tuple[list[np.ndarray], list[int], int]:
    """Read the sampled frames; if the container over-stated its length, sample the real length again.

    Frame counts in headers are estimates for some containers, and truncated files keep the count of
    the complete one; re-sampling over what can really be decoded keeps the frames evenly spaced.
    """
    indices = sample_indices(frame_count, n)
    frames, real_count = read(indices)
    if real_count is not None:
        if real_count == 0:
            raise MediaError("no frame decodes")
        frame_count, indices = real_count, sample_indices(real_count, n)
        frames, short = read(indices)
        if short is not None:
            raise MediaError(f"decoding stops at frame {short} on the second pass")
    return frames, indices, frame_count


def _read_opencv(path: Path, n: int, max_pixels: int | None) -> SampledFrames:
    probe = cv2.VideoCapture(str(path))
    try:
        if not probe.isOpened():
            raise MediaError("cannot open it")
        fps = float(probe.get(cv2.CAP_PROP_FPS) or 0.0)
        frame_count = int(probe.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width, height = int(probe.get(cv2.CAP_PROP_FRAME_WIDTH)), int(probe.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        probe.release()
    if fps <= 0 or frame_count <= 0 or width <= 0 or height <= 0:
        raise MediaError("no frame rate, frame count or frame size")

    def read(indices: list[int]) -> tuple[list[np.ndarray], int | None]:
        capture = cv2.VideoCapture(str(path))
        try:
            return _grab_indices(capture, indices, max_pixels)
        finally:
            capture.release()

    frames, indices, frame_count = _read_counted(read, frame_count, n)
    scale = _shrink_scale(width, height, max_pixels)
    return SampledFrames(frames, indices, fps, frame_count, "opencv", scale)


def _grab_indices(
    capture: cv2.VideoCapture, indices: list[int], max_pixels: int | None
) -> tuple[list[np.ndarray], int | None]:
    frames: list[np.ndarray] = []
    position = 0
    for index in indices:
        if index - position > SEEK_GAP_FRAMES and capture.set(cv2.CAP_PROP_POS_FRAMES, index):
            position = index
        while position < index:
            if not capture.grab():
                return frames, position
            position += 1
        ok, frame = capture.read()
        if not ok or frame is None:
            return frames, position
        frames.append(_fit(frame, max_pixels))
        position += 1
    return frames, None


def _read_pyav(path: Path, n: int, max_pixels: int | None) -> SampledFrames:
    """Decode forward to the last sampled frame, converting only the sampled ones.

    No seeking here: PyAV seeks land on keyframes, and the frame number must then be rebuilt from
    timestamps, which is least reliable in exactly the odd files that reach this fallback.
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError("no video stream")
            fps, frame_count, _ = video_timing(container, path)
            codec = container.streams.video[0].codec_context
            width, height = codec.width, codec.height
    except av.FFmpegError as err:
        # strerror, not str(err): that names the absolute path, and failure reports must not differ
        # between machines.
        raise MediaError(f"cannot open it ({err.strerror})") from err
    if fps <= 0 or frame_count <= 0 or width <= 0 or height <= 0:
        raise MediaError("no frame rate, frame count or frame size")

    def read(indices: list[int]) -> tuple[list[np.ndarray], int | None]:
        wanted, frames, decoded = set(indices), [], 0
        try:
            with av.open(str(path)) as container:
                for frame in container.decode(container.streams.video[0]):
                    if decoded in wanted:
                        frames.append(_fit(upright_bgr(frame), max_pixels))
                    decoded += 1
                    if decoded > indices[-1]:
                        return frames, None
        except av.FFmpegError:
            pass  # a damaged stream: what decoded before the damage is still usable
        return frames, decoded

    frames, indices, frame_count = _read_counted(read, frame_count, n)
    scale = _shrink_scale(width, height, max_pixels)
    return SampledFrames(frames, indices, fps, frame_count, "pyav", scale)
