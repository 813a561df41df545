"""`dfguard corpus build`: plan the demo corpus, render it in parallel, and describe it.

Layout, as FaceForensics++ (compression level = the clip's x264 CRF):
    original_sequences/demo/c<crf>/videos/<identity>__<k>.mp4
    manipulated_sequences/FaceSwap/c<crf>/videos/<identity>__<k>__<source identity>.mp4
    manipulated_sequences/SelfBlend/c<crf>/videos/<identity>__<k>.mp4
plus `dfguard_corpus.json` (labels, methods, identities), `face_truth.parquet` (the face box and
landmarks in every frame, which the extraction benchmark measures recall against) and a contact sheet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from dfguard.config import CorpusConfig, save_resolved
from dfguard.corpus import CONTACT_SHEET, CORPUS_INDEX
from dfguard.corpus.identities import Identity, find_identities
from dfguard.corpus.render import ClipPlan, render_pair
from dfguard.corpus.sheet import contact_sheet
from dfguard.faces.subject import FACE_TRUTH

log = logging.getLogger(__name__)

METHODS = ("FaceSwap", "SelfBlend")


@dataclass(frozen=True)
class CorpusResult:
    out_dir: Path
    clips: int
    real: int
    fake: int
    identities: int
    seconds: float
    contact_sheet: Path


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little")


def swap_groups(names: list[str], seed: int) -> list[list[str]]:
    """Pair identities (a triple when the count is odd) for face swaps.

    Swaps happen only inside a group, so the groups are the units that splits keep apart: a person
    never appears, as target or as source, on both sides of a split.
    """
    order = list(names)
    np.random.default_rng(seed).shuffle(order)
    groups = [order[i : i + 2] for i in range(0, len(order) - 1, 2)]
    if len(order) % 2:
        if groups:
            groups[-1].append(order[-1])
        else:
            groups.append([order[-1]])
    return groups


def plan_clips(identities: list[Identity], cfg: CorpusConfig) -> list[ClipPlan]:
    """Decide every clip's content and settings from the seed alone, before any rendering."""
    if len(identities) < 2:
        raise ValueError(f"need at least 2 identities for face swaps, found {len(identities)}")
    by_name = {identity.name: identity for identity in identities}
    partner = {}
    for group in swap_groups(sorted(by_name), cfg.seed):
        for i, name in enumerate(group):
            partner[name] = group[(i + 1) % len(group)]
    plans = []
    for rank, identity in enumerate(identities):
        for k in range(cfg.clips_per_identity):
            rng = np.random.default_rng(_seed(cfg.seed, identity.name, k))
            target = identity.appearances[k % len(identity.appearances)]
            source_identity = by_name[partner[identity.name]]
            source = source_identity.appearances[int(rng.integers(len(source_identity.appearances)))]
            method = METHODS[(rank + k) % len(METHODS)]
            fps = int(rng.choice(cfg.fps_choices))
            crf = int(rng.choice(cfg.crf_choices))
            n_frames = max(2, round(rng.uniform(*cfg.duration_s) * fps))
            clip = f"{identity.name}__{k:02d}"
            fake_name = f"{clip}__{source_identity.name}" if method == "FaceSwap" else clip
            plans.append(
                ClipPlan(
                    clip_name=clip,
                    identity=identity.name,
                    photo=target.photo,
                    box=target.face.box,
                    landmarks=target.face.landmarks,
                    method=method,
                    source_identity=source_identity.name if method == "FaceSwap" else identity.name,
                    source_photo=source.photo,
                    source_box=source.face.box,
                    source_landmarks=source.face.landmarks,
                    fps=fps,
                    n_frames=n_frames,
                    width=cfg.frame_width,
                    height=cfg.frame_height,
                    crf=crf,
                    face_height=float(rng.uniform(*cfg.face_height_px)),
                    seed=_seed(cfg.seed, identity.name, k, "render"),
                    real_path=f"original_sequences/demo/c{crf}/videos/{clip}.mp4",
                    fake_path=f"manipulated_sequences/{method}/c{crf}/videos/{fake_name}.mp4",
                )
            )
    return plans


def _index_entries(plan: ClipPlan) -> list[dict]:
    compression = plan.real_path.split("/")[2]
    real = {
        "path": plan.real_path,
        "label": "real",
        "method": "original",
        "source_identity": plan.identity,
        "target_identity": plan.identity,
        "compression": compression,
        "original_path": "",
    }
    fake = {
        **real,
        "path": plan.fake_path,
        "label": "fake",
        "method": plan.method,
        "source_identity": plan.source_identity,
        "original_path": plan.real_path,
    }
    return [real, fake]


def build_corpus(cfg: CorpusConfig, progress: bool = True) -> CorpusResult:
    """Build the corpus into `cfg.out_dir`, replacing it only once the new one is complete."""
    started = time.perf_counter()
    sources_dir, out_dir = Path(cfg.sources_dir), Path(cfg.out_dir)
    identities = find_identities(sources_dir, cfg.min_face_px)
    if cfg.max_identities:
        identities = identities[: cfg.max_identities]
    plans = plan_clips(identities, cfg)
    log.info("rendering %d clips of %d identities", 2 * len(plans), len(identities))

    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    workers = cfg.workers or os.cpu_count() or 1
    truth: list[dict] = []
    # Spawned, not forked: the parent has run torch (face detection), and a forked child can inherit
    # its thread pools' locks in a held state and hang.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_limit_threads) as pool:
        jobs = pool.map(render_pair, plans, [sources_dir] * len(plans), [staging] * len(plans))
        for rows in tqdm(jobs, total=len(plans), desc="corpus clips (pairs)", disable=not progress):
            truth.extend(rows)

    entries = [entry for plan in plans for entry in _index_entries(plan)]
    index = {
        "name": "dfguard-demo",
        "version": 1,
        "seed": cfg.seed,
        "identities": [i.name for i in identities],
        "clips": entries,
        "extras": [FACE_TRUTH, CONTACT_SHEET],
    }
    (staging / CORPUS_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    pd.DataFrame(truth).to_parquet(staging / FACE_TRUTH, index=False)
    contact_sheet(staging, entries, truth, staging / CONTACT_SHEET)
    save_resolved(cfg, staging)

    shutil.rmtree(out_dir, ignore_errors=True)
    staging.rename(out_dir)
    fakes = sum(e["label"] == "fake" for e in entries)
    return CorpusResult(
        out_dir=out_dir,
        clips=len(entries),
        real=len(entries) - fakes,
        fake=fakes,
        identities=len(identities),
        seconds=time.perf_counter() - started,
        contact_sheet=out_dir / CONTACT_SHEET,
    )


def _limit_threads() -> None:
    """One OpenCV thread per worker process: the pool already uses every core."""
    import cv2

    cv2.setNumThreads(1)
