"""`dfguard extract`: the faces of every manifest item, extracted in parallel, incrementally.

Output folder (a DVC stage output):
    crops/<video_id>/<frame:05d>_t<track>.<png|jpg>   aligned face crops
    faces.parquet      one row per face: box, landmarks, score, size, track, quality, crop path, and
                       `subject`: whether the face is the person the item's label is about
    frames.parquet     one row per sampled frame, with its status (OK, NO_FACE, FACE_TOO_SMALL)
    failures.csv       items that could not be read, with the reason
    contract.json      the preprocessing contract and its hash
    summary.json       counts and quality figures of the dataset
    .cache/<video_id>-<media key>.parquet   each item's rows, the record that it is done

An item is skipped when its cache file exists: the key is its content hash plus the hash of the
contract as it applies to it, so unchanged items are never redone and a changed setting redoes exactly
the items it affects. The top-level tables are rebuilt from the cache files of the items in the
manifest, so an item removed from the manifest leaves the tables (and its crops are deleted).

Every file is written under a temporary name and renamed into place, the tables all at once, so a run
that fails (killed, or out of disk space) leaves each item either done or not started and the tables
of the last run that finished. A write that fails for want of space (a full disk, a quota, a file size
limit) stops the run with `OutOfSpaceError`: every item after it would fail the same way.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import pandas as pd
import torch
from tqdm import tqdm

from dfguard.config import RESOLVED_CONFIG_NAME, ExtractConfig
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.detector import FaceDetector
from dfguard.faces.extract import MediaFaces, build_detector, extract_media, timed
from dfguard.faces.subject import FACE_TRUTH, mark_subjects
from dfguard.faces.table import CONTRACT_NAME, FACES_NAME, FRAMES_NAME
from dfguard.media import MediaError
from dfguard.runtime import torch_threads

log = logging.getLogger(__name__)

FAILURES_NAME = "failures.csv"
SUMMARY_NAME = "summary.json"
CROPS_DIR = "crops"
CACHE_DIR = ".cache"
UNREADABLE = "UNREADABLE"
MANIFEST_COLUMNS = ("path", "label", "method", "split")  # joined onto the tables for convenience
# A write failing with one of these failed for want of space, not because of the item.
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class OutOfSpaceError(RuntimeError):
    """A write of the face dataset failed for want of space (a full disk, a quota, a file size limit)."""


# The cache table of one item: one row per kept face, plus one row (face columns null) per sampled
# frame without a kept face, or a single row with frame -1 and status UNREADABLE for a failed item.
FACE_COLUMNS = [
    "track_id",
    "box",
    "landmarks",
    "score",
    "face_px",
    "sharpness",
    "brightness",
    "jpeg_quality",
    "blockiness",
    "crop",
]
FRAME_COLUMNS = ["frame", "timestamp_s", "status", "faces", "quarter_turns"]


@dataclass(frozen=True)
class ExtractResult:
    out_dir: Path
    faces_table: Path
    frames_table: Path
    failures_table: Path
    contract_path: Path
    summary_path: Path
    contract_hash: str
    items: int  # in the manifest
    extracted: int  # processed by this run (including those that failed)
    cached: int  # skipped: results of an earlier run with the same content and contract
    failed: int  # in failures.csv, from this run or earlier ones
    faces: int
    seconds: float
    stage_seconds: dict[str, float]  # summed over the items this run processed, across workers


@dataclass(frozen=True)
class ExtractJob:
    """One manifest item to extract: picklable, so a process pool or a flow's task can carry it."""

    video_id: str
    source: str  # absolute path of the media file
    n_frames: int
    cache_file: str
    crops_dir: str
    crops_rel: str  # crops_dir relative to the output folder, as the tables record it


@dataclass(frozen=True)
class ExtractPlan:
    """What a run of `dfguard extract` has to do: every item's job, and those not yet cached."""

    cfg: ExtractConfig
    contract: PreprocessingContract
    manifest: pd.DataFrame
    jobs: list[ExtractJob]
    todo: list[ExtractJob]
    started: float  # perf_counter() when planning began, for the run's wall time


def run_extract(cfg: ExtractConfig, progress: bool = True) -> ExtractResult:
    """Extract the faces of every item in `cfg.manifest_path` into `cfg.out_dir` (see module doc).

    Raises FileNotFoundError for a missing manifest and ValueError for invalid settings.
    """
    plan = plan_extract(cfg)
    stage_seconds, errors = _run_jobs(plan.todo, plan.contract, cfg, progress)
    return finish_extract(plan, stage_seconds, errors)


def plan_extract(cfg: ExtractConfig) -> ExtractPlan:
    """Read the manifest and list the jobs; items already extracted under the same contract are not
    in `todo`. Raises FileNotFoundError for a missing manifest, ValueError for invalid settings."""
    started = time.perf_counter()
    contract = PreprocessingContract.from_config(cfg)
    if cfg.workers < 0:
        raise ValueError(f"extract.workers must be 0 (every core) or more, got {cfg.workers}")
    manifest_path, dataset_dir, out_dir = Path(cfg.manifest_path), Path(cfg.dataset_dir), Path(cfg.out_dir)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"manifest {manifest_path} does not exist: run `dfguard ingest` first")
    manifest = pd.read_parquet(manifest_path).drop_duplicates("video_id").reset_index(drop=True)
    (out_dir / CACHE_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / CROPS_DIR).mkdir(exist_ok=True)
    jobs = [_job(row, contract, dataset_dir, out_dir) for row in manifest.itertuples(index=False)]
    todo = [job for job in jobs if not Path(job.cache_file).exists()]
    log.info("extract: %d items, %d to process, %d cached", len(jobs), len(todo), len(jobs) - len(todo))
    return ExtractPlan(cfg, contract, manifest, jobs, todo, started)


def finish_extract(
    plan: ExtractPlan, stage_seconds: dict[str, float], errors: dict[str, str]
) -> ExtractResult:
    """Rebuild the dataset's tables from the items' cache files once the jobs have run.

    `errors` (item -> message) are the unexpected failures of this run, listed in failures.csv.
    """
    cfg, contract, jobs = plan.cfg, plan.contract, plan.jobs
    dataset_dir, out_dir = Path(cfg.dataset_dir), Path(cfg.out_dir)
    tables = _collect(jobs, plan.manifest, errors)
    truth_path = dataset_dir / FACE_TRUTH
    truth = pd.read_parquet(truth_path) if truth_path.is_file() else None
    tables["faces"]["subject"] = mark_subjects(tables["faces"], truth)
    summary = _summary(tables, contract)
    resolved = json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True) + "\n"
    with _space_checked(f"the dataset's tables in {out_dir}"):
        _write_all_if_changed(
            {
                out_dir / FACES_NAME: _parquet_bytes(tables["faces"]),
                out_dir / FRAMES_NAME: _parquet_bytes(tables["frames"]),
                out_dir / FAILURES_NAME: tables["failures"].to_csv(index=False).encode(),
                out_dir / CONTRACT_NAME: contract.to_json().encode(),
                out_dir / SUMMARY_NAME: (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode(),
                out_dir / RESOLVED_CONFIG_NAME: resolved.encode(),
            }
        )
    # Only now: the tables written before named the removed items' crops.
    _remove_stale(out_dir, jobs)
    return ExtractResult(
        out_dir=out_dir,
        faces_table=out_dir / FACES_NAME,
        frames_table=out_dir / FRAMES_NAME,
        failures_table=out_dir / FAILURES_NAME,
        contract_path=out_dir / CONTRACT_NAME,
        summary_path=out_dir / SUMMARY_NAME,
        contract_hash=contract.hash,
        items=len(jobs),
        extracted=len(plan.todo),
        cached=len(jobs) - len(plan.todo),
        failed=len(tables["failures"]),
        faces=len(tables["faces"]),
        seconds=time.perf_counter() - plan.started,
        stage_seconds=stage_seconds,
    )


def _job(row: Any, contract: PreprocessingContract, dataset_dir: Path, out_dir: Path) -> ExtractJob:
    n_frames = contract.frames_for(row.split, row.media_kind)
    key = contract.media_key(n_frames)
    return ExtractJob(
        video_id=row.video_id,
        source=str((dataset_dir / row.path).resolve()),
        n_frames=n_frames,
        cache_file=str(out_dir / CACHE_DIR / f"{row.video_id}-{key}.parquet"),
        crops_dir=str(out_dir / CROPS_DIR / row.video_id),
        crops_rel=f"{CROPS_DIR}/{row.video_id}",
    )


def _run_jobs(
    jobs: list[ExtractJob], contract: PreprocessingContract, cfg: ExtractConfig, progress: bool
) -> tuple[dict[str, float], dict[str, str]]:
    """Process the jobs; returns stage seconds and the unexpected errors (item -> message).

    Unexpected errors are not cached, so the next run tries those items again; unreadable media is
    cached as a failure, since the same bytes will not decode next time either. OutOfSpaceError stops
    the run: the items not started are not tried.
    """
    stage_seconds: dict[str, float] = {}
    errors: dict[str, str] = {}
    workers = min(cfg.workers or os.cpu_count() or 1, max(len(jobs), 1))
    bar = tqdm(total=len(jobs), desc="extract faces", unit="item", disable=not progress)

    def record(job: ExtractJob, outcome: dict[str, float] | str) -> None:
        if isinstance(outcome, str):
            errors[job.video_id] = outcome
            log.error("extract %s failed: %s", job.source, outcome)
        else:
            for stage, seconds in outcome.items():
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        bar.update()

    if jobs and workers == 1:
        # In this process: no start-up cost, and the caller's thread settings are left alone.
        detector = build_detector(contract, cfg.device)
        for job in jobs:
            record(job, process_job(job, detector, contract))
    elif jobs:
        # Spawned, not forked: a fork of a process that has run torch can inherit its thread pools'
        # locks held, and hang.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=init_extract_worker,
            initargs=(contract.to_json(), cfg.device),
        ) as pool:
            contract_json = contract.to_json()
            futures = {pool.submit(process_in_worker, job, contract_json, cfg.device): job for job in jobs}
            try:
                for future in as_completed(futures):
                    record(futures[future], future.result())
            except OutOfSpaceError:
                pool.shutdown(cancel_futures=True)  # leaving the block would wait for every queued item
                raise
    bar.close()
    return stage_seconds, errors


# The detector of each contract this process has used: a pool or Dask worker builds it once.
_DETECTORS: dict[str, tuple[PreprocessingContract, FaceDetector]] = {}


def init_extract_worker(contract_json: str, device: str) -> None:
    """Set up a worker process of a pool that keeps every core busy: one thread each for torch and
    OpenCV, and the contract's detector built before the first item arrives."""
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _worker_detector(contract_json, device)


def process_in_worker(job: ExtractJob, contract_json: str, device: str = "") -> dict[str, float] | str:
    """`process_job` with this process's detector for the contract (built on first use)."""
    contract, detector = _worker_detector(contract_json, device)
    return process_job(job, detector, contract)


def _worker_detector(contract_json: str, device: str) -> tuple[PreprocessingContract, FaceDetector]:
    contract = PreprocessingContract.from_json(contract_json)
    key = f"{contract.hash}-{device}"
    if key not in _DETECTORS:
        _DETECTORS[key] = (contract, build_detector(contract, device))
    return _DETECTORS[key]


def process_job(
    job: ExtractJob, detector: FaceDetector, contract: PreprocessingContract
) -> dict[str, float] | str:
    """Extract one item, write its crops and then its cache file; stage seconds, or an error message.

    Raises OutOfSpaceError, leaving the item not done (no cache file, its earlier crops in place).
    """
    where = f"the faces of {job.source}"
    try:
        try:
            # One torch thread wherever the item runs (a pool worker, a flow's thread, this process):
            # the crops are then the same to the last bit.
            with torch_threads(1):
                result = extract_media(Path(job.source), job.n_frames, detector, contract)
        except MediaError as err:
            with _space_checked(where):
                _replace_crops(job, None, contract)
                failure = {"frame": -1, "timestamp_s": 0.0, "status": UNREADABLE, "reason": str(err)}
                _write_if_changed(Path(job.cache_file), _parquet_bytes(pd.DataFrame([failure])))
            return {}
        with timed(result.seconds, "write"), _space_checked(where):
            _replace_crops(job, result, contract)
            rows = _rows(job, result, contract)
            _write_if_changed(Path(job.cache_file), _parquet_bytes(pd.DataFrame(rows)))
        return result.seconds
    except OutOfSpaceError:
        raise
    except Exception as err:  # a worker must report, not die: the other items still get done
        return f"{type(err).__name__}: {err}"


@contextmanager
def _space_checked(what: str) -> Iterator[None]:
    """Turn a write failing for want of space into OutOfSpaceError, saying what was being written."""
    try:
        yield
    except OSError as err:
        if err.errno not in OUT_OF_SPACE:
            raise
        raise OutOfSpaceError(
            f"could not write {what}: {err.strerror} (the disk is full or a size limit is reached); "
            "free space and run again: finished items are kept and not redone"
        ) from err


def _crop_name(frame_index: int, track_id: int, contract: PreprocessingContract) -> str:
    return f"{frame_index:05d}_t{track_id}.{contract.crop_format}"


def _replace_crops(job: ExtractJob, result: MediaFaces | None, contract: PreprocessingContract) -> None:
    """Write the item's crops to a fresh folder and swap it in, so no crop of an older run remains."""
    final, partial = Path(job.crops_dir), Path(job.crops_dir + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if result is not None and result.faces:
        partial.mkdir(parents=True)
        params = (
            [cv2.IMWRITE_JPEG_QUALITY, contract.crop_jpeg_quality] if contract.crop_format == "jpg" else []
        )
        try:
            for face in result.faces:
                name = _crop_name(face.frame_index, face.track_id, contract)
                encoded, data = cv2.imencode(f".{contract.crop_format}", face.crop, params)
                if not encoded:
                    raise ValueError(f"OpenCV could not encode crop {name}")
                # Written by Python, not cv2.imwrite: a failed write then says why (errno), where
                # imwrite only returns False.
                (partial / name).write_bytes(data.tobytes())
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    shutil.rmtree(final, ignore_errors=True)
    if partial.exists():
        partial.rename(final)


def _rows(job: ExtractJob, result: MediaFaces, contract: PreprocessingContract) -> list[dict[str, Any]]:
    faces_by_frame: dict[int, list[dict[str, Any]]] = {}
    for face in result.faces:
        faces_by_frame.setdefault(face.frame_index, []).append(
            {
                "track_id": face.track_id,
                "box": face.face.box.round(2).tolist(),
                "landmarks": face.face.landmarks.ravel().round(2).tolist(),
                "score": face.face.score,
                "face_px": face.face_px,
                "sharpness": face.quality.sharpness,
                "brightness": face.quality.brightness,
                "jpeg_quality": face.quality.jpeg_quality,
                "blockiness": face.quality.blockiness,
                "crop": f"{job.crops_rel}/{_crop_name(face.frame_index, face.track_id, contract)}",
            }
        )
    rows = []
    for frame in result.frames:
        base = {
            "frame": frame.frame_index,
            "timestamp_s": frame.timestamp_s,
            "status": frame.status,
            "faces": frame.faces,
            "quarter_turns": result.quarter_turns,
        }
        rows.extend({**base, **face} for face in faces_by_frame.get(frame.frame_index, [{}]))
    return rows


def _collect(
    jobs: list[ExtractJob], manifest: pd.DataFrame, errors: dict[str, str]
) -> dict[str, pd.DataFrame]:
    """The dataset's tables, from the cache files of the manifest's items."""
    parts = []
    for job in jobs:
        if Path(job.cache_file).exists():
            part = pd.read_parquet(job.cache_file)
            part.insert(0, "video_id", job.video_id)
            parts.append(part)
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["video_id", "frame"])
    for column in [*FRAME_COLUMNS, *FACE_COLUMNS, "reason"]:
        if column not in rows:
            rows[column] = None
    info = manifest[["video_id", *MANIFEST_COLUMNS]]

    unreadable = rows[rows["status"] == UNREADABLE]
    failures = unreadable[["video_id", "status", "reason"]]
    if errors:
        failures = pd.concat(
            [
                failures,
                pd.DataFrame([{"video_id": v, "status": "ERROR", "reason": r} for v, r in errors.items()]),
            ]
        )
    read = rows[rows["status"] != UNREADABLE]
    frames = read.drop_duplicates(["video_id", "frame"])[["video_id", *FRAME_COLUMNS]]
    faces = read[read["track_id"].notna()][["video_id", "frame", "timestamp_s", *FACE_COLUMNS]]
    faces = faces.astype({"track_id": "int64"})
    return {
        "faces": info.merge(faces, on="video_id").reset_index(drop=True),
        "frames": info.merge(frames, on="video_id").reset_index(drop=True),
        "failures": info.merge(failures, on="video_id").reset_index(drop=True),
    }


def _summary(tables: dict[str, pd.DataFrame], contract: PreprocessingContract) -> dict[str, Any]:
    faces, frames = tables["faces"], tables["frames"]
    tracks = faces.groupby("video_id")["track_id"].nunique()

    def median(column: str) -> float | None:
        values = faces[column].dropna()
        return round(float(values.median()), 3) if len(values) else None

    return {
        "contract_hash": contract.hash,
        "items": int(frames["video_id"].nunique() + len(tables["failures"])),
        "failed": len(tables["failures"]),
        "frames": len(frames),
        "frames_by_status": {k: int(v) for k, v in frames["status"].value_counts().sort_index().items()},
        "faces": len(faces),
        "items_with_faces": int(faces["video_id"].nunique()),
        "items_with_several_people": int((tracks > 1).sum()),
        "subject_faces": int(faces["subject"].sum()),
        "median": {c: median(c) for c in ("face_px", "score", "sharpness", "brightness", "blockiness")},
        "faces_with_jpeg_quality": int(faces["jpeg_quality"].notna().sum()),
    }


def _remove_stale(out_dir: Path, jobs: list[ExtractJob]) -> None:
    """Delete cache files of other contracts or of items no longer in the manifest, and their crops."""
    keep_cache = {Path(job.cache_file).name for job in jobs}
    for path in (out_dir / CACHE_DIR).iterdir():
        if path.name not in keep_cache:
            path.unlink()
    keep_crops = {Path(job.crops_dir).name for job in jobs}
    for path in (out_dir / CROPS_DIR).iterdir():
        if path.name in keep_crops:
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _parquet_bytes(table: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _write_if_changed(path: Path, data: bytes) -> None:
    """Write atomically, and only when the bytes differ: an unchanged rerun leaves every file alone."""
    _write_all_if_changed({path: data})


def _write_all_if_changed(files: dict[Path, bytes]) -> None:
    """Write the files whose bytes differ as one: each to a partial file first, renamed into place only
    once all are written, so a failed write (a full disk) leaves the old set whole and no partial file."""
    partials = {
        path: path.with_name(f".{path.name}.partial")
        for path, data in files.items()
        if not (path.exists() and path.read_bytes() == data)
    }
    try:
        for path, partial in partials.items():
            partial.write_bytes(files[path])
    except BaseException:
        for partial in partials.values():
            partial.unlink(missing_ok=True)
        raise
    for path, partial in partials.items():
        partial.replace(path)
