"""FaceForensics++, including its DeepFakeDetection (actors) part.

    original_sequences/<youtube|actors>/<c0|c23|c40|raw>/videos/<id>.mp4
    manipulated_sequences/<Method>/<c0|c23|c40|raw>/videos/<target>_<source>.mp4
    manipulated_sequences/DeepFakeDetection/<c..>/videos/<target>_<source>__<scene>__<tag>.mp4

Actor numbers ("01") and YouTube ids ("001") come from different sets of people, so actors are
namespaced ("actor:01") to keep them from being merged with YouTube identities.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from dfguard.config import IngestConfig
from dfguard.ingest.layouts.base import Layout, Parsed, existing, interpret_each
from dfguard.ingest.records import Entry
from dfguard.ingest.splits import SPLITS

ORIGINALS = "original_sequences"
MANIPULATED = "manipulated_sequences"
ACTOR_METHOD = "DeepFakeDetection"

# FaceForensics++ downloads name the lossless level "raw"; the paper and everyone after call it c0.
_COMPRESSION = re.compile(r"c\d+|raw")
_YOUTUBE_ID = re.compile(r"[^_]+")
_ACTOR_ORIGINAL = re.compile(r"(?P<actor>[^_]+)__(?P<scene>.+)")
_YOUTUBE_FAKE = re.compile(r"(?P<target>[^_]+)_(?P<source>[^_]+)")
_ACTOR_FAKE = re.compile(r"(?P<target>[^_]+)_(?P<source>[^_]+)__(?P<scene>.+)__(?P<tag>[^_]+)")


def _matches(root: Path) -> bool:
    return (root / ORIGINALS).is_dir() or (root / MANIPULATED).is_dir()


def load_official_splits(splits_dir: Path) -> dict[str, str]:
    """Map every YouTube id in FaceForensics++'s train/val/test.json ([id, id] pairs) to its split."""
    split_of: dict[str, str] = {}
    for split in SPLITS:
        path = splits_dir / f"{split}.json"
        if not path.is_file():
            raise FileNotFoundError(f"FaceForensics++ split file {path} not found (ingest.ffpp_splits_dir)")
        pairs = json.loads(path.read_text())
        if not isinstance(pairs, list) or not all(
            isinstance(pair, list) and all(isinstance(i, str) for i in pair) for pair in pairs
        ):
            raise ValueError(f"{path}: expected a list of [id, id] pairs of strings")
        for video_id in (i for pair in pairs for i in pair):
            if split_of.setdefault(video_id, split) != split:
                raise ValueError(f"{path}: id {video_id!r} is also listed in {split_of[video_id]}.json")
    return split_of


def _interpret(rel: str, present: set[str], split_of: dict[str, str]) -> Entry | str:
    parts = PurePosixPath(rel).parts
    if len(parts) != 5 or parts[0] not in (ORIGINALS, MANIPULATED) or parts[3] != "videos":
        return f"not a FaceForensics++ path (<{ORIGINALS} or {MANIPULATED}>/<folder>/<c..>/videos/<file>)"
    top, group, level, _, name = parts
    if not _COMPRESSION.fullmatch(level):
        return f"{level!r} is not a FaceForensics++ compression folder (c0, c23, c40, raw)"
    compression = "c0" if level == "raw" else level
    stem, suffix = PurePosixPath(name).stem, PurePosixPath(name).suffix

    if top == ORIGINALS:
        if group == "youtube" and _YOUTUBE_ID.fullmatch(stem):
            identity, pinned = stem, split_of.get(stem, "")
        elif group == "actors" and (actor := _ACTOR_ORIGINAL.fullmatch(stem)):
            identity, pinned = f"actor:{actor['actor']}", ""
        elif group in ("youtube", "actors"):
            return f"cannot parse the identity from FaceForensics++ original name {name!r}"
        else:
            return f"unknown FaceForensics++ original source {group!r} (expected youtube or actors)"
        return Entry(rel, "real", "original", identity, identity, compression, "", pinned)

    if group == ACTOR_METHOD:
        fake = _ACTOR_FAKE.fullmatch(stem)
        if not fake:
            return (
                f"cannot parse {ACTOR_METHOD} fake name {name!r} (expected <target>_<source>__<scene>__<id>)"
            )
        source, target = f"actor:{fake['source']}", f"actor:{fake['target']}"
        original = f"{ORIGINALS}/actors/{level}/videos/{fake['target']}__{fake['scene']}{suffix}"
        pinned = ""
    else:
        fake = _YOUTUBE_FAKE.fullmatch(stem)
        if not fake:
            return f"cannot parse FaceForensics++ fake name {name!r} (expected <target>_<source>)"
        source, target = fake["source"], fake["target"]
        original = f"{ORIGINALS}/youtube/{level}/videos/{target}{suffix}"
        pinned = split_of.get(source) or split_of.get(target, "")
    return Entry(rel, "fake", group, source, target, compression, existing(original, present), pinned)


def _parse(root: Path, files: list[str], cfg: IngestConfig) -> Parsed:
    split_of = load_official_splits(Path(cfg.ffpp_splits_dir)) if cfg.ffpp_splits_dir else {}
    present = set(files)
    return interpret_each(files, lambda rel: _interpret(rel, present, split_of))


LAYOUT = Layout("ffpp", f"{ORIGINALS}/ or {MANIPULATED}/", _matches, _parse)
