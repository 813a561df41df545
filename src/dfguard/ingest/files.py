"""Finding the candidate files of a dataset folder, and reading each one's hash and media facts."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dfguard.config import RESOLVED_CONFIG_NAME
from dfguard.corpus import CORPUS_INDEX
from dfguard.ingest.records import Skip
from dfguard.media import MediaError, MediaInfo, probe_media

log = logging.getLogger(__name__)

# Files that describe a dataset rather than hold samples, in the layouts ingest reads.
SIDECAR_NAMES = frozenset(
    {
        "metadata.json",  # DFDC
        "train.json",  # FaceForensics++ official splits
        "val.json",
        "test.json",
        "List_of_testing_videos.txt",  # Celeb-DF
        CORPUS_INDEX,  # demo corpus
        RESOLVED_CONFIG_NAME,
    }
)
VIDEO_ID_HEX_CHARS = 20
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class FileFacts:
    video_id: str
    size_bytes: int
    info: MediaInfo


def list_files(root: Path, exclude: Path | None = None) -> tuple[list[str], list[Skip]]:
    """Every candidate file under `root` as a sorted POSIX path relative to it, and what was refused.

    Hidden files and folders and known sidecar files are neither candidates nor reported. `exclude` is
    a folder to leave out (the ingest output, when it lies inside the dataset). Symlinks to folders are
    not followed, and file symlinks resolving outside `root` are refused: a dataset must not pull in
    files from elsewhere on the machine. Folders that cannot be listed are reported, not passed over.
    """
    real_root = root.resolve()
    excluded = exclude.resolve() if exclude is not None else None
    files: list[str] = []
    skipped: list[Skip] = []

    def unreadable_folder(error: OSError) -> None:
        skipped.append(Skip(_relative(Path(error.filename), root), f"unreadable folder ({error.strerror})"))

    for folder, dirnames, filenames in os.walk(root, onerror=unreadable_folder):
        here = Path(folder)
        kept = []
        for name in sorted(dirnames):
            path = here / name
            if name.startswith(".") or path.resolve() == excluded:
                continue
            if path.is_symlink():
                skipped.append(Skip(_relative(path, root), "symlink to a folder (not followed)"))
                continue
            kept.append(name)
        dirnames[:] = kept  # os.walk descends only into what is left here
        for name in sorted(filenames):
            path = here / name
            if name.startswith(".") or name in SIDECAR_NAMES:
                continue
            rel = _relative(path, root)
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                skipped.append(Skip(rel, "symlink pointing outside the dataset folder"))
                continue
            files.append(rel)
    return sorted(files), skipped


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _sha256(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def inspect_file(path: Path) -> FileFacts | str:
    """The file's content hash, size and media facts, or the reason it cannot be used."""
    try:
        info = probe_media(path)
        digest, size = _sha256(path)
    except MediaError as err:
        return str(err)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    return FileFacts(digest[:VIDEO_ID_HEX_CHARS], size, info)


def inspect_files(root: Path, rels: list[str], workers: int, progress: bool) -> list[FileFacts | str]:
    """`inspect_file` on every path, in parallel, results in input order.

    Threads suffice: hashing and the OpenCV/PyAV decoders release the GIL, and threads avoid pickling.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(inspect_file, (root / rel for rel in rels))
        return list(
            tqdm(results, total=len(rels), desc="ingest: probe+hash", unit="file", disable=not progress)
        )
