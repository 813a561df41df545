"""Decoding photos and animated images, with the limits that keep a hostile file from exhausting memory.

OpenCV decodes the common formats fast; Pillow reads what it does not do well: GIF, animated images,
and the HEIF and AVIF photos of phones.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pillow_heif
from PIL import Image, ImageOps

from dfguard.media.animation import (
    DECODE_ERRORS,
    Animation,
    AnimationTooLargeError,
    animated_frame_count,
    decode_animation,
)
from dfguard.media.kinds import MediaError, decoded_by_pillow, read_head

# Pillow opens HEIF (an iPhone's photos) through this plugin; it reads AVIF by itself.
pillow_heif.register_heif_opener()

# Images whose header declares more pixels than this are refused before anything is decoded: a PNG of
# a few kilobytes can declare a 50000x50000 canvas (a decompression bomb: 7.5 GB once decoded). 120
# megapixels admits the largest common camera photos (108 MP phone sensors; an 8K frame is 33 MP).
MAX_IMAGE_PIXELS = 120_000_000


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as 8-bit BGR, turned upright by its EXIF orientation (as a phone shows it);
    MediaError for a corrupt file or one whose header declares more than MAX_IMAGE_PIXELS. An animated
    image gives its first frame."""
    _refuse_oversized(path)
    if decoded_by_pillow(read_head(path)):
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


def animation_length(path: Path) -> int:
    """The frames of an animated image (counted up to the damage in a damaged one); MediaError when
    Pillow cannot open it."""
    try:
        return animated_frame_count(path)
    except DECODE_ERRORS as err:
        raise MediaError(f"unreadable animated image ({_without_path(err, path)})") from err


def read_animation(path: Path, indices: list[int], frame_count: int) -> Animation:
    """The frames numbered `indices` of an animated image of `frame_count` frames (`animation_length`;
    fewer when the file is damaged before the last of them), with the length and timing of what
    decodes; MediaError for a file over MAX_IMAGE_PIXELS a frame or MAX_ANIMATION_PIXELS in all, or
    whose first frame does not decode."""
    _refuse_oversized(path)
    try:
        return decode_animation(path, indices, frame_count)
    except AnimationTooLargeError as err:
        raise MediaError(str(err)) from err
    except DECODE_ERRORS as err:
        raise MediaError(f"unreadable animated image ({_without_path(err, path)})") from err


def _without_path(err: Exception, path: Path) -> str:
    # Pillow's message can name the absolute path: reports must not differ between machines.
    return str(err).replace(str(path), path.name)


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
    except DECODE_ERRORS:
        return  # a header PIL cannot parse: OpenCV's decoding decides whether it is an image at all
    if width * height > MAX_IMAGE_PIXELS:
        raise MediaError(f"{width}x{height} px image ({width * height / 1e6:.0f} megapixels) is over {limit}")
