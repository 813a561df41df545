"""Animated images (GIF, animated WebP, APNG): the looping clips and stickers of social networks are
short videos stored in image formats.

OpenCV and PyAV see only their first frame (OpenCV reports a 4-frame GIF as 1 frame at 100 fps), so
Pillow reads them: it draws each frame over the canvas the previous ones left, as a browser plays them.
"""

from __future__ import annotations

import struct
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageSequence

ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})

# What Pillow raises on damaged or hostile image files, besides its own OSError (a truncated GIF gives a
# struct.error from deep in its parser).
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error)

# Every frame of an animated image is decoded (each draws over the last), about 10 ns a pixel here: a
# 20-second 720p GIF at 25 fps holds 460 megapixels; this limit is a few seconds of decoding.
MAX_ANIMATION_PIXELS = 1_000_000_000

# Browsers play a frame delay of 10 ms or less, or none, as 100 ms; GIFs made for the web rely on it.
SHORTEST_DELAY_MS = 10
DEFAULT_DELAY_MS = 100


class AnimationTooLargeError(ValueError):
    """An animation whose frames hold more pixels in all than the caller will decode."""


@dataclass(frozen=True)
class Animation:
    frames: list[np.ndarray]  # BGR, the frames asked for that decoded, in order
    frame_count: int  # the frames that decode: a damaged file's count stops at the damage
    duration_s: float
    width: int
    height: int

    @property
    def fps(self) -> float:
        return self.frame_count / self.duration_s


def is_animated(path: Path) -> bool:
    """Whether a file is an animated GIF, WebP or PNG, found by reaching its second frame only. Not a
    multi-page TIFF (pages of a document, not a clip), nor a file Pillow cannot parse (its decoding then
    decides what it is)."""
    try:
        with Image.open(path) as image:
            return image.format in ANIMATED_FORMATS and bool(getattr(image, "is_animated", False))
    except (*DECODE_ERRORS, Image.DecompressionBombError):
        return False


def animated_frame_count(path: Path) -> int:
    """The frames of an animated image that Pillow can reach (raises Pillow's errors for a file it
    cannot open)."""
    with Image.open(path) as image:
        try:
            return int(getattr(image, "n_frames", 1))
        except DECODE_ERRORS:
            return _count_reachable_frames(path)


def _count_reachable_frames(path: Path) -> int:
    """Count a damaged animation's frames by seeking until the damage (Pillow counts them in one go
    only when the whole file parses).

    Seeking draws each frame, so the count stops once the frames pass MAX_ANIMATION_PIXELS, a count
    that decoding then refuses: a damaged GIF of a megabyte can declare 100000 full-canvas frames.
    """
    with Image.open(path) as image:
        frame_pixels, count = image.width * image.height, 1
        while count * frame_pixels <= MAX_ANIMATION_PIXELS:
            try:
                image.seek(count)
            except DECODE_ERRORS:
                return count
            count += 1
        return count


def decode_animation(path: Path, indices: Collection[int], frame_count: int) -> Animation:
    """Play the animation of `frame_count` frames (`animated_frame_count`), keeping the frames numbered
    `indices` (from 0) as BGR.

    Every frame is decoded: each draws over the last, and the duration sums all their delays. So an
    animation whose frames hold more than MAX_ANIMATION_PIXELS in all is refused before decoding
    (AnimationTooLargeError): a GIF of a few kilobytes can declare thousands of full-canvas frames. A damaged
    file gives the frames before the damage; one whose first frame fails raises OSError.
    """
    with Image.open(path) as image:
        width, height = image.size
        if frame_count * width * height > MAX_ANIMATION_PIXELS:
            raise AnimationTooLargeError(
                f"{frame_count} frames of {width}x{height} px are over the "
                f"{MAX_ANIMATION_PIXELS / 1e6:.0f}-megapixel decoding limit for animated images"
            )
        wanted, frames, decoded, delay_ms = set(indices), [], 0, 0
        try:
            for frame in ImageSequence.Iterator(image):
                frame.load()  # WebP states a frame's delay only once the frame is decoded
                if decoded in wanted:
                    frames.append(cv2.cvtColor(np.asarray(frame.convert("RGB")), cv2.COLOR_RGB2BGR))
                delay = frame.info.get("duration") or 0
                delay_ms += delay if delay > SHORTEST_DELAY_MS else DEFAULT_DELAY_MS
                decoded += 1
        except DECODE_ERRORS as err:
            if decoded == 0:
                raise OSError(f"its first frame does not decode: {err}") from err
    return Animation(frames, decoded, delay_ms / 1000, width, height)
