"""PyAV's side of video: frames turned upright, a stream's timing, and writing H.264."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dfguard.media.kinds import MediaError


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
