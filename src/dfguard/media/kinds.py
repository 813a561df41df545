"""What a media file is and how its frames are read, decided from its name and its first bytes; the
error every reader raises."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dfguard.media.animation import is_animated

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
    | {".gif", ".heic", ".heif", ".avif"}  # read by Pillow
)

MediaKind = Literal["video", "image"]
# How a file's frames are read: one picture, an animated image's frames (judged as a video) or a video.
Decoder = Literal["image", "animation", "video"]


class MediaError(ValueError):
    """A file that cannot be used as media, with the reason."""


def media_kind(path: Path) -> MediaKind | None:
    """The kind of media a file name promises, or None for an unsupported extension."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return None


# The opening bytes of the image formats OpenCV decodes (WebP: "RIFF", a size, then "WEBP").
IMAGE_SUFFIXES = {
    b"\xff\xd8\xff": ".jpg",
    b"\x89PNG\r\n\x1a\n": ".png",
    b"BM": ".bmp",
    b"II*\x00": ".tif",
    b"MM\x00*": ".tif",
    b"P5": ".pgm",
    b"P6": ".ppm",
}
IMAGE_SIGNATURES = tuple(IMAGE_SUFFIXES)
GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
# HEIF and AVIF photos are ISO media files like MP4: the brand of their "ftyp" box tells them apart.
PHOTO_BRANDS = frozenset({b"heic", b"heix", b"mif1", b"avif"})
MATROSKA_SIGNATURE = b"\x1a\x45\xdf\xa3"  # MKV and WebM
# Videos admitted by their extension only (nothing decides their decoder by content): named by content
# for uploads, which have no trustworthy name.
OTHER_VIDEO_SUFFIXES = {b"\x30\x26\xb2\x75\x8e\x66\xcf\x11": ".wmv", b"\x00\x00\x01\xba": ".mpg"}


def read_head(path: Path) -> bytes:
    """The opening bytes of a file, enough for every signature here."""
    with path.open("rb") as file:
        return file.read(16)


def decoded_by_pillow(head: bytes) -> bool:
    """GIF (OpenCV 4.14 reads it, but not every build does), HEIF (OpenCV cannot) and AVIF (OpenCV
    ignores its orientation, so a phone's portrait would lie on its side)."""
    return head.startswith(GIF_SIGNATURES) or (head[4:8] == b"ftyp" and head[8:12] in PHOTO_BRANDS)


def _looks_like_image(head: bytes) -> bool:
    return (
        head.startswith(IMAGE_SIGNATURES)
        or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
        or decoded_by_pillow(head)
    )


def _looks_like_video(head: bytes) -> bool:
    """MP4, MOV and M4V (an "ftyp" box first), Matroska and AVI."""
    return (
        head[4:8] == b"ftyp"
        or head.startswith(MATROSKA_SIGNATURE)
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
    )


def sniffed_suffix(head: bytes) -> str | None:
    """A file extension for content from its opening bytes alone (an upload's name and MIME type are
    the client's say, its bytes are not): one that `media_decoder` reads the way the content needs, or
    None for content that is neither a supported image nor a video."""
    if head[4:8] == b"ftyp" and head[8:12] in PHOTO_BRANDS:
        return ".avif" if head[8:12] == b"avif" else ".heic"
    known = {
        **IMAGE_SUFFIXES,
        **dict.fromkeys(GIF_SIGNATURES, ".gif"),
        MATROSKA_SIGNATURE: ".mkv",
        **OTHER_VIDEO_SUFFIXES,
    }
    for signature, suffix in known.items():
        if head.startswith(signature):
            return suffix
    if head[:4] == b"RIFF":
        return {b"WEBP": ".webp", b"AVI ": ".avi"}.get(head[8:12])
    if head[4:8] == b"ftyp":
        return ".mp4"
    return None


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
    head = read_head(path)
    if _looks_like_image(head):
        return "animation" if is_animated(path) else "image"
    if _looks_like_video(head):
        return "video"
    return kind
