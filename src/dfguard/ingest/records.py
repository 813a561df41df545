"""What ingestion learns about one file: an `Entry` a layout could interpret, or a `Skip` with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Entry:
    """Labels and identities a layout reads from a file's path and the dataset's sidecar files.

    `pinned_split` is the split an official list assigns ("" when none does); it only steers split
    assignment and is not a manifest column.
    """

    path: str  # POSIX, relative to the dataset folder
    label: Literal["real", "fake"]
    method: str
    source_identity: str
    target_identity: str
    compression: str = "unknown"
    original_path: str = ""
    pinned_split: str = ""


@dataclass(frozen=True)
class Skip:
    """A file (or a listed file that is absent) left out of the manifest, and why."""

    path: str
    reason: str
