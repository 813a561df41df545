"""Benchmark of face extraction on a corpus with known faces: speed, where the time goes, and recall.

One run measures, on the same videos and the same sampled frames:
- the full extraction (`run_extract`: decode, detect, align, measure, write), videos/min and frames/s;
- decoding alone (the floor any pipeline pays), with the same process pool;
- a peer pipeline in the style of DeepfakeBench's preprocessing: dlib's HOG frontal face detector on
  every full frame with one upsampling (as DeepfakeBench calls it), the largest face cropped square
  with the same 1.3 margin, resized and written as PNG. DeepfakeBench then also runs dlib's 81-point
  landmark predictor and detects again on the aligned crop; both are left out (the 81-point model is
  not in any registry package), which only makes the peer faster, so the speed ratio is conservative;
- face recall of both: the share of sampled frames whose true face (`face_truth.parquet`) is found,
  a detection counting when its box centre is within 0.3 face heights of the true centre or IoU >= 0.4.

Run it with `python -m dfguard.bench.extract --out-dir reports/extract-bench`. It is a measurement, not a
test: it prints a table and writes `bench.json` and `bench.png` into the output folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from dfguard.config import PARAMS_FILE, ExtractConfig, load_config
from dfguard.corpus import FACE_TRUTH
from dfguard.faces.dataset import run_extract
from dfguard.faces.frames import read_sampled
from dfguard.faces.subject import box_matches
from dfguard.media import MediaError
from dfguard.runtime import configure_runtime

DLIB_UPSAMPLE = 1  # DeepfakeBench's `face_detector(rgb, 1)`
STAGES = ("decode", "detect", "align", "write")


def run_bench(
    cfg: ExtractConfig, out_dir: Path, frames_per_video: int = 16, max_videos: int | None = None
) -> dict[str, Any]:
    """Benchmark extraction on the manifest's videos (the first `max_videos`); print and return figures.

    `cfg.dataset_dir` must hold `face_truth.parquet` (the demo corpus does) for recall.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = pd.read_parquet(cfg.manifest_path)
    manifest = manifest[manifest["media_kind"] == "video"].sort_values("path").reset_index(drop=True)
    if max_videos is not None:
        manifest = manifest.head(max_videos)
    truth = pd.read_parquet(Path(cfg.dataset_dir) / FACE_TRUTH)
    workers = cfg.workers or os.cpu_count() or 1
    paths = [str(Path(cfg.dataset_dir) / path) for path in manifest["path"]]
    n = frames_per_video

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".bench-") as scratch:
        scratch_dir = Path(scratch)
        manifest_path = scratch_dir / "manifest.parquet"
        manifest.to_parquet(manifest_path, index=False)
        ours_cfg = dataclasses.replace(
            cfg,
            manifest_path=str(manifest_path),
            out_dir=str(scratch_dir / "ours"),
            frames_train=n,
            frames_val=n,
            frames_test=n,
            workers=workers,
        )
        started = time.perf_counter()
        result = run_extract(ours_cfg, progress=True)
        ours_seconds = time.perf_counter() - started
        frames = pd.read_parquet(result.frames_table)
        faces = pd.read_parquet(result.faces_table)

        decoded, decode_seconds, _ = _timed_pool(_decode_only, [(p, n) for p in paths], workers)
        peer_dir = scratch_dir / "peer"
        jobs = [(p, n, str(peer_dir / f"{i:05d}")) for i, p in enumerate(paths)]
        peer, peer_seconds, startup_seconds = _timed_pool(_dlib_pipeline, jobs, workers)

    sampled_frames = int(sum(decoded))
    ours_boxes: dict[tuple[str, int], list[list[float]]] = {}
    for row in faces[["path", "frame", "box"]].itertuples(index=False):
        ours_boxes.setdefault((row.path, int(row.frame)), []).append(list(row.box))
    peer_boxes = {
        (str(manifest["path"][i]), frame): boxes
        for i, per_video in enumerate(peer)
        for frame, boxes in per_video.items()
    }
    sampled = [(row.path, int(row.frame)) for row in frames[["path", "frame"]].itertuples(index=False)]
    stage_total = sum(result.stage_seconds.get(stage, 0.0) for stage in STAGES) or 1.0
    videos = len(paths)
    figures: dict[str, Any] = {
        "videos": videos,
        "frames_per_video": n,
        "sampled_frames": sampled_frames,
        "workers": workers,
        "cpu_count": os.cpu_count(),
        "resolution": f"{int(manifest['width'].median())}x{int(manifest['height'].median())}",
        "contract_hash": result.contract_hash,
        # Ours is timed end to end (pool start-up and table writing included); the peer and decoding
        # alone are timed with their pools already up, which favours them by about this much.
        "pool_startup_s": round(startup_seconds, 2),
        "ours": {
            "seconds": round(ours_seconds, 2),
            "videos_per_min": round(videos / ours_seconds * 60, 1),
            "frames_per_s": round(sampled_frames / ours_seconds, 1),
            "recall": _recall(sampled, ours_boxes, truth),
            "failed": result.failed,
        },
        "decode_only": {
            "seconds": round(decode_seconds, 2),
            "frames_per_s": round(sampled_frames / decode_seconds, 1),
        },
        "peer_dlib_hog": {
            "seconds": round(peer_seconds, 2),
            "videos_per_min": round(videos / peer_seconds * 60, 1),
            "frames_per_s": round(sampled_frames / peer_seconds, 1),
            "recall": _recall(sampled, peer_boxes, truth),
            "upsample": DLIB_UPSAMPLE,
        },
        # Shares of the worker time spent in each stage of the full extraction.
        "stage_share": {
            stage: round(result.stage_seconds.get(stage, 0.0) / stage_total, 3) for stage in STAGES
        },
    }
    figures["speedup_vs_peer"] = round(peer_seconds / ours_seconds, 2)
    figures["decode_share_of_wall_time"] = round(decode_seconds / ours_seconds, 3)
    (out_dir / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    _plot(figures, out_dir / "bench.png")
    print(_table(figures))
    return figures


def _timed_pool(
    function: Callable[..., Any], jobs: list[tuple[Any, ...]], workers: int
) -> tuple[list[Any], float, float]:
    """Results of `function(*job)` for each job in a spawned pool, the seconds the jobs took once the
    pool was up, and the seconds starting the pool took (processes spawned, modules imported)."""
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_one_thread) as pool:
        list(pool.map(time.sleep, [0.5] * workers))  # one nap per worker: every worker has started
        ready = time.perf_counter()
        results = list(pool.map(function, *zip(*jobs, strict=True)))
        done = time.perf_counter()
    return results, done - ready, ready - started - 0.5


def _one_thread() -> None:
    """One OpenCV thread per worker, as in the extraction's pool: the pool already uses every core."""
    cv2.setNumThreads(1)


def _decode_only(path: str, n: int) -> int:
    try:
        return len(read_sampled(Path(path), n).frames)
    except MediaError:
        return 0


_DLIB: dict[str, Any] = {}


def _dlib_pipeline(path: str, n: int, out_dir: str) -> dict[int, list[list[float]]]:
    """The peer pipeline on one video: boxes found per sampled frame (the largest one is cropped)."""
    import dlib  # a benchmark-only dependency: `pip install dlib-bin`

    detector = _DLIB.setdefault("detector", dlib.get_frontal_face_detector())
    try:
        sampled = read_sampled(Path(path), n)
    except MediaError:
        return {}
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    found = {}
    for index, frame in zip(sampled.indices, sampled.frames, strict=True):
        rects = detector(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), DLIB_UPSAMPLE)
        boxes = [[r.left(), r.top(), r.right(), r.bottom()] for r in rects]
        found[index] = boxes
        if boxes:
            x1, y1, x2, y2 = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            crop = _square_crop(frame, (x1 + x2) / 2, (y1 + y2) / 2, 1.3 * max(x2 - x1, y2 - y1))
            cv2.imwrite(f"{out_dir}/{index:05d}.png", cv2.resize(crop, (224, 224)))
    return found


def _square_crop(frame: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
    half = side / 2
    matrix = np.array([[1, 0, half - cx], [0, 1, half - cy]], np.float64)
    return cv2.warpAffine(frame, matrix, (round(side), round(side)), borderMode=cv2.BORDER_CONSTANT)


def _recall(
    sampled: list[tuple[str, int]], found: dict[tuple[str, int], list[list[float]]], truth: pd.DataFrame
) -> float:
    """Share of sampled frames with a true face for which a found box matches it."""
    true_boxes = {
        (row.path, int(row.frame)): np.asarray(row.box, float) for row in truth.itertuples(index=False)
    }
    hits = total = 0
    for key in sampled:
        if key not in true_boxes:
            continue
        total += 1
        hits += any(box_matches(box, true_boxes[key]) for box in found.get(key, []))
    return round(hits / total, 4) if total else float("nan")


def _table(f: dict[str, Any]) -> str:
    ours, peer, decode = f["ours"], f["peer_dlib_hog"], f["decode_only"]
    lines = [
        f"face extraction benchmark: {f['videos']} videos ({f['resolution']}), {f['frames_per_video']} "
        f"frames each = {f['sampled_frames']} frames, {f['workers']} worker processes",
        f"{'pipeline':<34}{'seconds':>9}{'videos/min':>12}{'frames/s':>10}{'recall':>9}",
        f"{'ours: MTCNN, aligned, full output':<34}{ours['seconds']:>9.1f}{ours['videos_per_min']:>12.1f}"
        f"{ours['frames_per_s']:>10.1f}{ours['recall']:>9.2%}",
        f"{'peer: dlib HOG (DeepfakeBench)':<34}{peer['seconds']:>9.1f}{peer['videos_per_min']:>12.1f}"
        f"{peer['frames_per_s']:>10.1f}{peer['recall']:>9.2%}",
        f"{'decode only (the floor)':<34}{decode['seconds']:>9.1f}{'':>12}{decode['frames_per_s']:>10.1f}",
        f"speed-up over the peer: {f['speedup_vs_peer']:.2f}x; decoding alone takes "
        f"{f['decode_share_of_wall_time']:.0%} of our wall time",
        f"(ours end to end, including {f['pool_startup_s']:.1f} s of process-pool start-up; the others "
        "with their pools already started)",
        "share of worker time by stage: "
        + ", ".join(f"{stage} {share:.0%}" for stage, share in f["stage_share"].items()),
    ]
    return "\n".join(lines)


def _plot(f: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (speed, stages) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    names = ["decode only", "ours (MTCNN)", "dlib HOG peer"]
    values = [f["decode_only"]["frames_per_s"], f["ours"]["frames_per_s"], f["peer_dlib_hog"]["frames_per_s"]]
    bars = speed.bar(names, values, color=["#999999", "#1f77b4", "#ff7f0e"])
    speed.bar_label(bars, fmt="%.0f")
    speed.set_ylabel("sampled frames / s")
    speed.set_title(
        f"recall: ours {f['ours']['recall']:.2%}, peer {f['peer_dlib_hog']['recall']:.2%}", fontsize=10
    )
    shares = f["stage_share"]
    stages.bar(list(shares), [100 * v for v in shares.values()], color="#1f77b4")
    stages.set_ylabel("% of worker time")
    stages.set_title("our time by stage", fontsize=10)
    fig.suptitle(
        f"{f['videos']} videos x {f['frames_per_video']} frames, {f['workers']} workers", fontsize=11
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out-dir", type=Path, default=Path("reports/extract-bench"))
    parser.add_argument("--frames", type=int, default=16, help="frames sampled per video")
    parser.add_argument("--max-videos", type=int, default=None)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE)
    args = parser.parse_args(argv)
    configure_runtime()
    run_bench(load_config(args.params).extract, args.out_dir, args.frames, args.max_videos)


if __name__ == "__main__":
    main()
