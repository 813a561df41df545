"""`dfguard ingest`: one dataset folder in, one manifest with identity-disjoint splits out."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dfguard.config import IngestConfig, save_resolved
from dfguard.ingest.files import inspect_files, list_files
from dfguard.ingest.layouts import resolve_layout
from dfguard.ingest.manifest import (
    MANIFEST_COLUMNS,
    build_manifest,
    drop_duplicates,
    manifest_record,
    skipped_table,
    summarize,
    write_outputs,
)
from dfguard.ingest.records import Skip
from dfguard.ingest.splits import assign_splits

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no single truth value to compare or hash
class IngestResult:
    manifest_path: Path
    skipped_path: Path
    summary_path: Path
    manifest: pd.DataFrame
    skipped: pd.DataFrame


def run_ingest(cfg: IngestConfig, progress: bool = True) -> IngestResult:
    """Scan `cfg.dataset_dir`, probe and hash every usable file, assign splits, and write the outputs.

    Files that cannot be used are listed in skipped.csv with the reason; nothing is dropped silently.
    Raises FileNotFoundError for a missing dataset folder and ValueError for one matching no layout.
    """
    started = time.perf_counter()
    root, out_dir = Path(cfg.dataset_dir), Path(cfg.out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist (ingest.dataset_dir)")
    if cfg.workers < 0:
        raise ValueError(f"ingest.workers must be 0 (every core) or more, got {cfg.workers}")
    layout = resolve_layout(root, cfg.layout)
    if cfg.ffpp_splits_dir and layout.name != "ffpp":
        log.warning("ingest.ffpp_splits_dir is set but the layout is %s; it is ignored", layout.name)

    files, skipped = list_files(root, exclude=out_dir)
    parsed = layout.parse(root, files, cfg)
    skipped += parsed.skipped
    log.info("%s layout: %d media files to read, %d skipped", layout.name, len(parsed.entries), len(skipped))

    workers = cfg.workers or os.cpu_count() or 1
    inspected = inspect_files(root, [entry.path for entry in parsed.entries], workers, progress)
    records = []
    for entry, facts in zip(parsed.entries, inspected, strict=True):
        if isinstance(facts, str):
            skipped.append(Skip(entry.path, facts))
        else:
            records.append(manifest_record(entry, facts, layout.name))
    records, duplicates = drop_duplicates(records)
    skipped += duplicates

    rows = pd.DataFrame(records, columns=[*MANIFEST_COLUMNS, "pinned_split"])
    rows["split"] = assign_splits(rows, cfg.split_ratios, cfg.split_seed)
    manifest = build_manifest(rows)
    skipped_rows = skipped_table(skipped)
    if manifest.empty:
        log.warning("no usable media in %s; see %s", root, out_dir)
    summary = summarize(manifest, skipped_rows, layout.name)
    manifest_path, skipped_path, summary_path = write_outputs(out_dir, manifest, skipped_rows, summary)
    save_resolved(cfg, out_dir)
    log.info(
        "ingested %d files (%d skipped) into %s in %.1f s",
        len(manifest),
        len(skipped_rows),
        manifest_path,
        time.perf_counter() - started,
    )
    return IngestResult(manifest_path, skipped_path, summary_path, manifest, skipped_rows)
