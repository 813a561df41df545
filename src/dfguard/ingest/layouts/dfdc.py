"""DFDC (Deepfake Detection Challenge) parts: folders of videos, each with a `metadata.json`.

    <part>/metadata.json   {"<file>": {"label": "REAL" | "FAKE", "split": ..., "original": "<file>"}}

The dataset does not name people. A real video is taken as its own identity, and a fake joins the
group of the real video it was made from (target identity = that video's stem). The metadata's
"split" is "train" for every file of the training parts, so it carries no split information and is
ignored.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from dfguard.config import IngestConfig
from dfguard.ingest.layouts.base import Layout, Parsed, existing, interpret_each, missing_listed
from dfguard.ingest.records import Entry

METADATA = "metadata.json"


def _metadata_files(root: Path) -> list[Path]:
    """The dataset folder itself may be one part, or hold several part folders."""
    return sorted(path for path in [root / METADATA, *root.glob(f"*/{METADATA}")] if path.is_file())


def _matches(root: Path) -> bool:
    return bool(_metadata_files(root))


def _load_listing(root: Path) -> dict[str, Any]:
    """Every metadata record, keyed by the file's path relative to the dataset folder."""
    listing: dict[str, Any] = {}
    for path in _metadata_files(root):
        records = json.loads(path.read_text())
        if not isinstance(records, dict):
            raise ValueError(f"{path}: expected an object mapping file names to records")
        part = path.parent.relative_to(root)
        listing.update({(part / name).as_posix(): record for name, record in records.items()})
    return listing


def _interpret(rel: str, present: set[str], listing: dict[str, Any]) -> Entry | str:
    if rel not in listing:
        return f"not listed in a {METADATA}"
    record = listing[rel]
    label = str(record.get("label", "")).lower() if isinstance(record, dict) else ""
    if label not in ("real", "fake"):
        return f"{METADATA} gives no REAL or FAKE label for it"
    stem = PurePosixPath(rel).stem
    if label == "real":
        return Entry(rel, "real", "original", stem, stem)
    original = str(record.get("original") or "")
    original_rel = (PurePosixPath(rel).parent / original).as_posix() if original else ""
    return Entry(
        rel,
        "fake",
        "DFDC",
        "",
        PurePosixPath(original).stem,
        original_path=existing(original_rel, present),
    )


def _parse(root: Path, files: list[str], cfg: IngestConfig) -> Parsed:
    listing = _load_listing(root)
    present = set(files)
    parsed = interpret_each(files, lambda rel: _interpret(rel, present, listing))
    parsed.skipped += missing_listed(listing, present, METADATA)
    return parsed


LAYOUT = Layout("dfdc", f"{METADATA} in the folder or its subfolders", _matches, _parse)
