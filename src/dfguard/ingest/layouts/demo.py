"""The demo corpus written by `dfguard corpus build`: FaceForensics++-shaped folders described by an index.

The index (`dfguard_corpus.json`) states every clip's label, method and identities, so nothing is
inferred from names. Files named under its optional "extras" (ground truth, contact sheet) are not
samples and are left out without a report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dfguard.config import IngestConfig
from dfguard.corpus import CORPUS_INDEX as INDEX
from dfguard.ingest.layouts.base import Layout, Parsed, existing, interpret_each, missing_listed
from dfguard.ingest.records import Entry

_CLIP_KEYS = ("path", "label", "method", "source_identity", "target_identity", "compression", "original_path")


def _matches(root: Path) -> bool:
    return (root / INDEX).is_file()


def load_index(root: Path) -> dict[str, Any]:
    """Read and check the index; a malformed one is a broken corpus, so it raises ValueError."""
    path = root / INDEX
    index = json.loads(path.read_text())
    clips = index.get("clips") if isinstance(index, dict) else None
    if not isinstance(clips, list):
        raise ValueError(f"{path}: expected an object with a 'clips' list")
    for number, clip in enumerate(clips):
        if not isinstance(clip, dict) or any(not isinstance(clip.get(key), str) for key in _CLIP_KEYS):
            raise ValueError(f"{path}: clip {number} needs string fields {', '.join(_CLIP_KEYS)}")
        if clip["label"] not in ("real", "fake"):
            raise ValueError(f"{path}: clip {number} has label {clip['label']!r}, expected real or fake")
    return index


def _interpret(rel: str, present: set[str], clips: dict[str, dict[str, str]]) -> Entry | str:
    clip = clips.get(rel)
    if clip is None:
        return f"not listed in {INDEX}"
    return Entry(
        rel,
        clip["label"],  # type: ignore[arg-type]  # checked by load_index
        clip["method"],
        clip["source_identity"],
        clip["target_identity"],
        clip["compression"],
        existing(clip["original_path"], present),
    )


def _parse(root: Path, files: list[str], cfg: IngestConfig) -> Parsed:
    index = load_index(root)
    extras = set(index.get("extras", []))
    samples = [rel for rel in files if rel not in extras]
    clips = {clip["path"]: clip for clip in index["clips"]}
    present = set(samples)
    parsed = interpret_each(samples, lambda rel: _interpret(rel, present, clips))
    parsed.skipped += missing_listed(clips, present, INDEX)
    return parsed


LAYOUT = Layout("demo", INDEX, _matches, _parse)
