"""Celeb-DF (v1 and v2).

    Celeb-real/id<celebrity>_<clip>.mp4                       real, identity celeb:id<celebrity>
    YouTube-real/<clip>.mp4                                   real, each clip its own person
    Celeb-synthesis/id<target>_id<source>_<clip>.mp4          fake of Celeb-real/id<target>_<clip>.mp4
    List_of_testing_videos.txt                                lines "<1 real | 0 fake> <relative path>"

Listed videos are Celeb-DF's official test set and are pinned there, so results stay comparable with
published ones.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

from dfguard.config import IngestConfig
from dfguard.ingest.layouts.base import Layout, Parsed, existing, interpret_each
from dfguard.ingest.records import Entry

log = logging.getLogger(__name__)

CELEB_REAL, YOUTUBE_REAL, SYNTHESIS = "Celeb-real", "YouTube-real", "Celeb-synthesis"
TEST_LIST = "List_of_testing_videos.txt"
_TEST_LABELS = {"1": "real", "0": "fake"}
_CELEB_CLIP = re.compile(r"(?P<celebrity>[^_]+)_(?P<clip>[^_]+)")
_SYNTHESIS_CLIP = re.compile(r"(?P<target>[^_]+)_(?P<source>[^_]+)_(?P<clip>[^_]+)")


def _matches(root: Path) -> bool:
    return any((root / folder).is_dir() for folder in (CELEB_REAL, YOUTUBE_REAL, SYNTHESIS))


def read_test_list(path: Path) -> dict[str, str]:
    """Map each path in Celeb-DF's test list to the label the list gives it (empty when there is no list)."""
    if not path.is_file():
        log.info("no %s: Celeb-DF's official test set is not pinned", path.name)
        return {}
    listed = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        flag, _, rel = line.strip().partition(" ")
        if flag not in _TEST_LABELS or not rel.strip():
            log.warning("%s line %d is not '<0|1> <path>': %r", path.name, number, line)
            continue
        listed[rel.strip()] = _TEST_LABELS[flag]
    return listed


def _interpret(rel: str, present: set[str], test_list: dict[str, str]) -> Entry | str:
    parts = PurePosixPath(rel).parts
    if len(parts) != 2 or parts[0] not in (CELEB_REAL, YOUTUBE_REAL, SYNTHESIS):
        return f"not a Celeb-DF path (a file directly in {CELEB_REAL}/, {YOUTUBE_REAL}/ or {SYNTHESIS}/)"
    folder, name = parts
    stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix
    pinned = "test" if rel in test_list else ""
    if folder == YOUTUBE_REAL:
        identity = f"youtube:{stem}"
        return Entry(rel, "real", "original", identity, identity, pinned_split=pinned)
    if folder == CELEB_REAL:
        clip = _CELEB_CLIP.fullmatch(stem)
        if not clip:
            return f"cannot parse Celeb-DF real name {name!r} (expected id<celebrity>_<clip>)"
        identity = f"celeb:{clip['celebrity']}"
        return Entry(rel, "real", "original", identity, identity, pinned_split=pinned)
    fake = _SYNTHESIS_CLIP.fullmatch(stem)
    if not fake:
        return f"cannot parse Celeb-DF fake name {name!r} (expected id<target>_id<source>_<clip>)"
    original = existing(f"{CELEB_REAL}/{fake['target']}_{fake['clip']}{suffix}", present)
    return Entry(
        rel,
        "fake",
        SYNTHESIS,
        f"celeb:{fake['source']}",
        f"celeb:{fake['target']}",
        original_path=original,
        pinned_split=pinned,
    )


def _parse(root: Path, files: list[str], cfg: IngestConfig) -> Parsed:
    test_list = read_test_list(root / TEST_LIST)
    present = set(files)
    parsed = interpret_each(files, lambda rel: _interpret(rel, present, test_list))
    for entry in parsed.entries:
        listed_label = test_list.get(entry.path)
        if listed_label and listed_label != entry.label:
            log.warning(
                "%s lists %s as %s, its folder says %s", TEST_LIST, entry.path, listed_label, entry.label
            )
    absent = set(test_list) - present
    if absent:
        log.warning("%d videos in %s are not in the dataset folder", len(absent), TEST_LIST)
    return parsed


LAYOUT = Layout("celebdf", f"{CELEB_REAL}/, {YOUTUBE_REAL}/ or {SYNTHESIS}/", _matches, _parse)
