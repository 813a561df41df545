"""Reading facts about media files and writing videos; shared by corpus, ingest, extraction and detection.

OpenCV is tried first because it is fast; PyAV is the fallback for containers OpenCV cannot open.
Pillow reads what neither does well: animated images, GIF, and the HEIF and AVIF photos of phones. All
are wrapped so a bad file raises `MediaError` with a reason a person can act on, never a crash deeper in.
"""

from dfguard.media.animation import MAX_ANIMATION_PIXELS, Animation
from dfguard.media.images import MAX_IMAGE_PIXELS, animation_length, read_animation, read_image
from dfguard.media.kinds import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    Decoder,
    MediaError,
    MediaKind,
    media_decoder,
    media_kind,
    sniffed_suffix,
)
from dfguard.media.probe import MediaInfo, probe_media
from dfguard.media.video import upright_bgr, video_timing, write_video

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_ANIMATION_PIXELS",
    "MAX_IMAGE_PIXELS",
    "VIDEO_EXTENSIONS",
    "Animation",
    "Decoder",
    "MediaError",
    "MediaInfo",
    "MediaKind",
    "animation_length",
    "media_decoder",
    "media_kind",
    "probe_media",
    "read_animation",
    "read_image",
    "sniffed_suffix",
    "upright_bgr",
    "video_timing",
    "write_video",
]
