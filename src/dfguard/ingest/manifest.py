"""The manifest table and ingest's other outputs: the skipped report and the summary.

Every output is written to a hidden temporary file in the output folder and renamed over the old one,
so a crash leaves either the previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from dfguard.ingest.files import FileFacts
from dfguard.ingest.records import Entry, Skip
from dfguard.ingest.splits import SPLITS

MANIFEST_NAME = "manifest.parquet"
SKIPPED_NAME = "skipped.csv"
SUMMARY_NAME = "summary.json"

# Column order and pandas dtype of the manifest; str columns are Python strings (object dtype).
MANIFEST_COLUMNS: dict[str, str] = {
    "video_id": "str",
    "path": "str",
    "label": "str",
    "method": "str",
    "source_identity": "str",
    "target_identity": "str",
    "compression": "str",
    "split": "str",
    "duration_s": "float64",
    "fps": "float64",
    "frame_count": "int64",
    "width": "int64",
    "height": "int64",
    "media_kind": "str",
    "dataset": "str",
    "original_path": "str",
    "size_bytes": "int64",
}
SUMMARY_COUNTS = ("split", "label", "method", "media_kind")


def manifest_record(entry: Entry, facts: FileFacts, dataset: str) -> dict[str, Any]:
    """One manifest row, without its split, plus the `pinned_split` that split assignment reads."""
    info = facts.info
    return {
        "video_id": facts.video_id,
        "path": entry.path,
        "label": entry.label,
        "method": entry.method,
        "source_identity": entry.source_identity,
        "target_identity": entry.target_identity,
        "compression": entry.compression,
        "duration_s": info.duration_s,
        "fps": info.fps,
        "frame_count": info.frame_count,
        "width": info.width,
        "height": info.height,
        "media_kind": info.kind,
        "dataset": dataset,
        "original_path": entry.original_path,
        "size_bytes": facts.size_bytes,
        "pinned_split": entry.pinned_split,
    }


def drop_duplicates(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Skip]]:
    """Keep the first record (by path) of each content hash; report the others as duplicates of it.

    The same bytes under two names would otherwise be counted twice, and could land in two splits.
    """
    first_path: dict[str, str] = {}
    kept, skipped = [], []
    for record in sorted(records, key=lambda r: r["path"]):
        original = first_path.setdefault(record["video_id"], record["path"])
        if original == record["path"]:
            kept.append(record)
        else:
            skipped.append(Skip(record["path"], f"duplicate of {original}"))
    return kept, skipped


def build_manifest(rows: pd.DataFrame) -> pd.DataFrame:
    """The manifest's columns, in order and typed, sorted by path, so equal input gives equal bytes."""
    table = rows.reindex(columns=list(MANIFEST_COLUMNS)).astype(MANIFEST_COLUMNS)
    return table.sort_values("path", kind="stable").reset_index(drop=True)


def skipped_table(skipped: list[Skip]) -> pd.DataFrame:
    table = pd.DataFrame([(s.path, s.reason) for s in skipped], columns=["path", "reason"], dtype=str)
    return table.sort_values(["path", "reason"], kind="stable").reset_index(drop=True)


def summarize(manifest: pd.DataFrame, skipped: pd.DataFrame, layout: str) -> dict[str, Any]:
    """Counts a person checks after an ingest: sizes per split/label/method/kind and people per split.

    Only what the inputs decide: the summary is tracked in git (a DVC metric), so a timing in it would
    leave the clone dirty after every run. `run_ingest` logs the elapsed time instead.
    """
    identities_per_split = {}
    for split in SPLITS:
        rows = manifest[manifest["split"] == split]
        names = set(rows["source_identity"]) | set(rows["target_identity"])
        identities_per_split[split] = len(names - {""})
    return {
        "layout": layout,
        "files": len(manifest),
        "skipped": len(skipped),
        "counts": {column: _counts(manifest[column]) for column in SUMMARY_COUNTS},
        "counts_by_split_and_label": {
            split: _counts(manifest.loc[manifest["split"] == split, "label"]) for split in SPLITS
        },
        "identities_per_split": identities_per_split,
    }


def _counts(column: pd.Series) -> dict[str, int]:
    return {str(key): int(value) for key, value in sorted(column.value_counts().items())}


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it into place."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_outputs(
    out_dir: Path, manifest: pd.DataFrame, skipped: pd.DataFrame, summary: dict[str, Any]
) -> tuple[Path, Path, Path]:
    """Write the manifest, the skipped report and (last, as the sign of a finished run) the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / MANIFEST_NAME, out_dir / SKIPPED_NAME, out_dir / SUMMARY_NAME
    write_atomic(paths[0], lambda tmp: manifest.to_parquet(tmp, index=False))
    write_atomic(paths[1], lambda tmp: skipped.to_csv(tmp, index=False))
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    write_atomic(paths[2], lambda tmp: tmp.write_text(text))
    return paths


def manifest_columns(manifest_path: str, video_ids: pd.Series, columns: list[str]) -> pd.DataFrame:
    """The manifest's `columns` for each video; "unknown" without a manifest, a column or a value."""
    path = Path(manifest_path)
    manifest = pd.read_parquet(path).drop_duplicates("video_id") if path.is_file() else pd.DataFrame()
    found = pd.DataFrame(index=video_ids.index)
    for column in columns:
        if column not in manifest:
            found[column] = "unknown"
            continue
        lookup = dict(zip(manifest["video_id"], manifest[column].fillna("unknown"), strict=True))
        found[column] = video_ids.map(lambda v, lookup=lookup: lookup.get(v, "unknown") or "unknown")
    return found
