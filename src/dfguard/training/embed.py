"""`dfguard embed`: the frozen CLIP features of every face crop, and of self-blends of the real ones.

A DVC stage between `extract` and `train`. It fills the feature store (`models.features`) that
`clip_frozen` reads: every crop of the face dataset, and `sbi_variants` self-blended fakes
(`training.sbi`) of each real crop, so the head trains in seconds and every later stage scores the
crops without running the backbone. It is incremental: whatever the store already holds (the same
input to the same graph) is not computed again, so a dataset that grows costs only its new crops, and
a run killed half-way keeps what it flushed.

A self-blend is a deterministic function of the crop's pixels and its variant number, so the same
crop gives the same fakes on any machine; `variants.parquet` maps (crop key, variant) to the store key
of that fake's features, so the trainer finds them without remaking the blends.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dfguard.config import EmbedConfig, save_resolved
from dfguard.faces.crops import read_crop
from dfguard.faces.table import read_contract, read_faces
from dfguard.models.clip import clip_preset
from dfguard.models.clip_frozen import FEATURE_DIM, ClipInt8Backbone, feature_store
from dfguard.models.features import FeatureStore
from dfguard.runtime import torch_threads
from dfguard.training.sbi import self_blend
from dfguard.transforms import to_batch

log = logging.getLogger(__name__)

VARIANTS_FILE = "variants.parquet"
FLUSH_ROWS = 2048  # computed features kept in memory before they are written to the store


@dataclass(frozen=True)
class EmbedResult:
    out_dir: Path
    crops: int
    self_blends: int
    computed: int  # features computed this run (the rest were in the store)
    seconds: float


def sbi_variant(crop: np.ndarray, variant: int, margin: float) -> np.ndarray:
    """Self-blend number `variant` of a real crop: seeded by the crop's pixels, so it is the same
    fake wherever it is made."""
    seed = int.from_bytes(hashlib.blake2b(crop.tobytes(), digest_size=8).digest(), "little")
    return self_blend(crop, np.random.default_rng((seed, variant)), margin=margin).image


class _Writer:
    """Computed features waiting to be added to the store (None: a reader, nothing is written)."""

    def __init__(self, store: FeatureStore | None) -> None:
        self.store, self.keys, self.rows = store, [], []
        self.computed = 0

    def keep(self, keys: Sequence[str], features: np.ndarray, unstored: np.ndarray) -> None:
        self.computed += int(unstored.sum())
        if self.store is None:
            return
        self.keys += [key for key, new in zip(keys, unstored, strict=True) if new]
        self.rows.append(features[unstored])
        if len(self.keys) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.store is not None and self.keys:
            self.store.add(self.keys, np.concatenate(self.rows))
        self.keys, self.rows = [], []


def embed_crop_files(
    backbone: ClipInt8Backbone,
    paths: Sequence[str],
    store: FeatureStore,
    write: bool = False,
    batch_size: int = 32,
    progress: str = "",
) -> tuple[list[str], np.ndarray]:
    """(keys, features) of each crop file, looked up in `store` and computed where missing (added to
    `store` when `write`)."""
    preset = clip_preset()
    writer = _Writer(store if write else None)
    keys: list[str] = []
    features = np.zeros((len(paths), FEATURE_DIM), np.float32)
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc=progress, unit="batch", disable=not progress):
        crops = [read_crop(path) for path in paths[start : start + batch_size]]
        batch_keys, batch_features, unstored = backbone.features_of(to_batch(crops, preset).numpy(), store)
        keys += batch_keys
        features[start : start + len(crops)] = batch_features
        writer.keep(batch_keys, batch_features, unstored)
    writer.flush()
    return keys, features


def read_variants(folder: Path) -> pd.DataFrame:
    """The (crop_key, variant) -> key index of the self-blends in a store folder (empty if none)."""
    path = folder / VARIANTS_FILE
    if not path.is_file():
        return pd.DataFrame(
            {"crop_key": pd.Series(dtype=str), "variant": pd.Series(dtype=int), "key": pd.Series(dtype=str)}
        )
    return pd.read_parquet(path)


def embed_self_blends(
    backbone: ClipInt8Backbone,
    paths: Sequence[str],
    crop_keys: Sequence[str],
    variants: int,
    margin: float,
    store: FeatureStore,
    write: bool = False,
    batch_size: int = 32,
    progress: str = "",
) -> np.ndarray:
    """Features (len(paths) * variants, D) of each real crop's self-blends, crop by crop then variant
    by variant: from the store through its variants index where held, made and computed otherwise
    (and then added to the store and the index when `write`)."""
    index = read_variants(store.folder)
    known = dict(zip(zip(index["crop_key"], index["variant"], strict=True), index["key"], strict=True))
    wanted = [(i, v) for i in range(len(paths)) for v in range(variants)]
    features = np.zeros((len(wanted), FEATURE_DIM), np.float32)
    listed = [known.get((crop_keys[i], v)) for i, v in wanted]
    held_rows = [row for row, key in enumerate(listed) if key is not None]
    if held_rows:
        found, held = store.lookup([listed[row] for row in held_rows])
        features[np.asarray(held_rows)[found]] = held
        missing = [row for row, ok in zip(held_rows, found, strict=True) if not ok]
    else:
        missing = []
    missing = sorted(set(missing) | {row for row, key in enumerate(listed) if key is None})
    preset = clip_preset()
    writer = _Writer(store if write else None)
    new_index: list[tuple[str, int, str]] = []
    for start in tqdm(range(0, len(missing), batch_size), desc=progress, unit="batch", disable=not progress):
        rows = missing[start : start + batch_size]
        blends = [sbi_variant(read_crop(paths[wanted[row][0]]), wanted[row][1], margin) for row in rows]
        keys, batch_features, unstored = backbone.features_of(to_batch(blends, preset).numpy(), store)
        features[rows] = batch_features
        writer.keep(keys, batch_features, unstored)
        new_index += [
            (crop_keys[wanted[row][0]], wanted[row][1], key) for row, key in zip(rows, keys, strict=True)
        ]
        if write and not writer.keys:  # just flushed: the index follows the features it names
            _write_variants(store.folder, index, new_index)
    writer.flush()
    if write and new_index:
        _write_variants(store.folder, index, new_index)
    return features


def _write_variants(folder: Path, index: pd.DataFrame, new: list[tuple[str, int, str]]) -> None:
    added = pd.DataFrame(new, columns=["crop_key", "variant", "key"])
    table = pd.concat([index, added], ignore_index=True).drop_duplicates(["crop_key", "variant"], keep="last")
    tmp = folder / f".{VARIANTS_FILE}.partial"
    table.to_parquet(tmp, index=False)
    tmp.replace(folder / VARIANTS_FILE)


def run_embed(cfg: EmbedConfig, progress: bool = True) -> EmbedResult:
    """Fill `cfg.out_dir` with the features of every crop of `cfg.faces_dir`, and of `cfg.sbi_variants`
    self-blends of every real crop (every split: cross-validation trains on them all)."""
    started = time.perf_counter()
    faces = read_faces(cfg.faces_dir)
    margin = read_contract(cfg.faces_dir).margin
    out = Path(cfg.out_dir)
    store = feature_store(out)
    if store.discard_if_other():
        (out / VARIANTS_FILE).unlink(missing_ok=True)
        log.warning("%s held features of another backbone or layout: every feature is computed again", out)
    backbone = ClipInt8Backbone()
    stored_before = len(store)
    # The session takes torch's thread count when made: every core unless `threads` says otherwise.
    with torch_threads(cfg.threads) if cfg.threads else contextlib.nullcontext():
        paths = [str(Path(cfg.faces_dir) / crop) for crop in faces["crop"]]
        keys, _ = embed_crop_files(
            backbone, paths, store, write=True, progress="embed crops" if progress else ""
        )
        real = np.flatnonzero(faces["target"].to_numpy() == 0)
        embed_self_blends(
            backbone,
            [paths[i] for i in real],
            [keys[i] for i in real],
            cfg.sbi_variants,
            margin,
            store,
            write=True,
            progress="embed self-blends" if progress else "",
        )
    save_resolved(cfg, out)
    seconds = time.perf_counter() - started
    blends, computed = len(real) * cfg.sbi_variants, len(store) - stored_before
    log.info(
        "embedded %d crops and %d self-blends in %.0f s (%d computed)", len(paths), blends, seconds, computed
    )
    return EmbedResult(out, len(paths), blends, computed, round(seconds, 1))
