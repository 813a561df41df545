"""Any collection sorted into `real/` and `fake/` folders, of videos and images.

    real/<identity>/.../<file>    real, identity = first subfolder
    real/<file>                   real, its own identity (the stem)
    fake/<method>/.../<file>      fake, method = first subfolder, identity = the file's stem
    fake/<file>                   fake, method "unknown"

Nothing here names the people in a fake, so its file stem stands in for its identity.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from dfguard.config import IngestConfig
from dfguard.ingest.layouts.base import Layout, Parsed, interpret_each
from dfguard.ingest.records import Entry


def _matches(root: Path) -> bool:
    return (root / "real").is_dir() or (root / "fake").is_dir()


def _interpret(rel: str) -> Entry | str:
    path = PurePosixPath(rel)
    top, nested = path.parts[0], len(path.parts) > 2
    if top == "real":
        identity = path.parts[1] if nested else path.stem
        return Entry(rel, "real", "original", identity, identity)
    if top == "fake":
        return Entry(rel, "fake", path.parts[1] if nested else "unknown", "", path.stem)
    return "outside the real/ and fake/ folders"


def _parse(root: Path, files: list[str], cfg: IngestConfig) -> Parsed:
    return interpret_each(files, _interpret)


LAYOUT = Layout("generic", "real/ or fake/", _matches, _parse)
