"""The contract every dataset layout implements, and the per-file loop they share."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from dfguard.config import IngestConfig
from dfguard.ingest.records import Entry, Skip
from dfguard.media import media_kind


@dataclass
class Parsed:
    """A layout's reading of the file list: interpretable media, and everything else with a reason."""

    entries: list[Entry] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)


@dataclass(frozen=True)
class Layout:
    name: str
    signature: str  # what auto-detection looks for, quoted when no layout matches
    matches: Callable[[Path], bool]
    parse: Callable[[Path, list[str], IngestConfig], Parsed]


def interpret_each(files: Iterable[str], interpret: Callable[[str], Entry | str]) -> Parsed:
    """Apply `interpret` (an Entry, or the reason it cannot be used) to every file with a media extension.

    The extension is checked first so that, say, a README inside a layout's folders is reported as
    unsupported rather than as a name the layout cannot parse.
    """
    parsed = Parsed()
    for rel in files:
        suffix = PurePosixPath(rel).suffix
        if media_kind(Path(rel)) is None:
            parsed.skipped.append(Skip(rel, f"unsupported file type {suffix or '(none)'!r}"))
            continue
        result = interpret(rel)
        if isinstance(result, Entry):
            parsed.entries.append(result)
        else:
            parsed.skipped.append(Skip(rel, result))
    return parsed


def missing_listed(listed: Iterable[str], present: set[str], index_name: str) -> list[Skip]:
    """Report files an index names but the folder lacks, so an incomplete download is visible."""
    return [Skip(rel, f"listed in {index_name} but missing on disk") for rel in sorted(set(listed) - present)]


def existing(rel: str, present: set[str]) -> str:
    """`rel` when that file is in the dataset, else "": original_path must point at a file one can open."""
    return rel if rel in present else ""
