"""A store of frozen-backbone features, keyed by the exact input the backbone reads.

A frozen backbone maps the same preprocessed crop to the same features every time, so its features
can be computed once (`dfguard embed`) and looked up by every later reader: training a head,
validation, calibration, evaluation, cross-validation folds and the loop's re-scoring. The key is a
digest of the preprocessed float32 input itself (plus the backbone's identity), not a file name: a
hit is the same computation by construction, and a crop that changed, or a contract that crops
differently, simply misses and is computed afresh.

Layout of a store folder (nothing in it is unpickled):
- `features.npy`: float32 (N, D), row i the features of key i;
- `keys.parquet`: column `key` (hex digest), row for row;
- `store.json`: the backbone's identity and D; a store made by another backbone is refused.
Writes append and replace those files atomically (`write_store`), so a reader sees the old store or
the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

FEATURES_FILE, KEYS_FILE, STORE_FILE = "features.npy", "keys.parquet", "store.json"


def input_key(pixels: np.ndarray, backbone_id: str) -> str:
    """The store key of one preprocessed input (C, H, W) for the backbone `backbone_id`."""
    digest = hashlib.blake2b(backbone_id.encode(), digest_size=16)
    digest.update(np.ascontiguousarray(pixels, dtype=np.float32).tobytes())
    return digest.hexdigest()


class FeatureStore:
    """Features of one backbone, read from a store folder (memory-mapped) and looked up by key."""

    def __init__(self, folder: str | Path, backbone_id: str, dim: int) -> None:
        self.folder = Path(folder)
        self.backbone_id = backbone_id
        self.dim = dim
        self._rows: dict[str, int] = {}
        self._features = np.zeros((0, dim), np.float32)
        self._lock = threading.Lock()
        self._loaded_mtime: float | None = None

    def _refresh(self) -> None:
        """(Re)read the folder when it changed since the last read; an absent folder is an empty store."""
        record_path = self.folder / STORE_FILE
        try:
            mtime = record_path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._loaded_mtime:
            return
        record = json.loads(record_path.read_text())
        if not self._made_here(record):
            raise ValueError(
                f"{self.folder} holds features of {record.get('backbone')!r} ({record.get('dim')} values), "
                f"not of {self.backbone_id!r} ({self.dim}): give another folder or delete it"
            )
        keys = pd.read_parquet(self.folder / KEYS_FILE)["key"].tolist()
        features = np.load(self.folder / FEATURES_FILE, mmap_mode="r", allow_pickle=False)
        if features.shape != (len(keys), self.dim):
            raise ValueError(f"{self.folder}: {len(keys)} keys but features of shape {features.shape}")
        self._rows = {key: row for row, key in enumerate(keys)}
        self._features = features
        self._loaded_mtime = mtime

    def _made_here(self, record: dict) -> bool:
        """Whether a store record is of this backbone and feature layout."""
        return record.get("backbone") == self.backbone_id and record.get("dim") == self.dim

    def discard_if_other(self) -> bool:
        """Delete the store in the folder if another backbone or feature layout made it (True then):
        what the owner of a store does when its layout changes, since none of its rows can be reused."""
        with self._lock:
            record_path = self.folder / STORE_FILE
            if not record_path.is_file() or self._made_here(json.loads(record_path.read_text())):
                return False
            for name in (STORE_FILE, FEATURES_FILE, KEYS_FILE):  # the record first: then no store is seen
                (self.folder / name).unlink(missing_ok=True)
            self._rows, self._features = {}, np.zeros((0, self.dim), np.float32)
            self._loaded_mtime = None
            return True

    def __len__(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._rows)

    def lookup(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found, features): a boolean mask over `keys` and the features of the found ones, in order."""
        with self._lock:
            self._refresh()
            rows = [self._rows.get(key, -1) for key in keys]
            found = np.array([row >= 0 for row in rows], bool)
            taken = [row for row in rows if row >= 0]
            return found, np.asarray(self._features[taken], np.float32).reshape(len(taken), self.dim)

    def add(self, keys: list[str], features: np.ndarray) -> int:
        """Append the features of keys not stored yet; returns how many were new."""
        if features.shape != (len(keys), self.dim):
            raise ValueError(f"expected ({len(keys)}, {self.dim}) features, got {features.shape}")
        with self._lock:
            self._refresh()
            new = [i for i, key in enumerate(keys) if key not in self._rows]
            new = list({keys[i]: i for i in new}.values())  # a key twice in one call is stored once
            if not new:
                return 0
            all_keys = [*self._rows, *(keys[i] for i in new)]
            stacked = np.concatenate(
                [np.asarray(self._features, np.float32), features[new].astype(np.float32)]
            )
            write_store(self.folder, self.backbone_id, all_keys, stacked)
            self._loaded_mtime = None
            self._refresh()
            return len(new)


def write_store(folder: Path, backbone_id: str, keys: list[str], features: np.ndarray) -> None:
    """Replace the store in `folder` by these keys and features, each file written then renamed; the
    record last, so a reader that sees the new record sees the new files."""
    folder.mkdir(parents=True, exist_ok=True)

    def replace(name: str, write: object) -> None:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        os.close(fd)
        try:
            write(Path(tmp))  # type: ignore[operator]
            os.chmod(tmp, 0o644)
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def save_features(path: Path) -> None:
        with path.open("wb") as handle:
            np.save(handle, np.ascontiguousarray(features, np.float32), allow_pickle=False)

    replace(FEATURES_FILE, save_features)
    replace(KEYS_FILE, lambda path: pd.DataFrame({"key": keys}).to_parquet(path, index=False))
    record = {"backbone": backbone_id, "dim": int(features.shape[1]), "rows": len(keys)}
    replace(STORE_FILE, lambda path: path.write_text(json.dumps(record, indent=2) + "\n"))


# The store that frozen backbones consult in this process, set by an entry point (`use_store`): the
# stages and studies of a project read its `dfguard embed` output; the service computes afresh.
_ACTIVE_FOLDER: Path | None = None


def use_store(folder: str | Path | None) -> None:
    """Make frozen backbones in this process look their features up in `folder` (None: in none)."""
    global _ACTIVE_FOLDER
    _ACTIVE_FOLDER = Path(folder) if folder else None


def use_store_if_made(folder: str | Path) -> None:
    """`use_store(folder)` when `dfguard embed` has made it (its record is there); else leave the
    active store as it is. What every entry point of a project calls with `embed.out_dir`."""
    if (Path(folder) / STORE_FILE).is_file():
        use_store(folder)


def active_store_folder() -> Path | None:
    return _ACTIVE_FOLDER
