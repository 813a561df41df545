"""`dfguard bench detect`: the latency of `dfguard detect` on a 10 s 640x360 clip with the model warm,
split into decode, faces and classification; on the same clip as an animated GIF; on a 48-megapixel
photo, shrunk to 4K UHD as `detect` reads it against judged as decoded; the classifier's throughput
alone; and a table of the registered frame detectors and the clip model (parameters, faces/s on this
machine's CPU, and the test split's video AUC and ECE for each trained model folder supplied)."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

from dfguard.config import EvaluateConfig
from dfguard.evaluation.run import run_evaluate
from dfguard.faces.crops import read_crop
from dfguard.faces.frames import MAX_FRAME_PIXELS, read_sampled
from dfguard.inference.predictor import Prediction, Predictor
from dfguard.media import write_video
from dfguard.models import Detector, crop_detector
from dfguard.models.clip_frozen import forget_recent_features
from dfguard.models.features import use_store
from dfguard.models.scoring import score_crops, track_clip_logits
from dfguard.models.weights import initial_weights_skipped

CLIP_SECONDS, CLIP_FPS = 10, 25
FRAME_MODELS = ("efficientnet_lite0", "blend_map", "patch", "mobilenet_v2", "resnet50", "small_cnn")
CLIP_MODEL, CLIP_FRAME_MODEL = "temporal", "efficientnet_lite0"  # the clip model over the default backbone
# A 640x360 frame enlarged 14.4 times: 9216x5184, a 48-megapixel photo (a common phone sensor's).
PHOTO_ENLARGEMENT = 14.4


def make_clip(source: Path, out: Path) -> Path:
    """A 10 s, 25 fps clip made by playing a corpus clip back and forth (same size, same faces)."""
    sampled = read_sampled(source, 1000)
    frames = sampled.frames + sampled.frames[::-1]
    needed = CLIP_SECONDS * CLIP_FPS
    looped = [frames[i % len(frames)] for i in range(needed)]
    write_video(iter(looped), out, fps=CLIP_FPS, crf=23, preset="veryfast")
    return out


def make_gif(clip: Path, out: Path) -> Path:
    """The clip as a looping GIF, as social networks repost clips: every frame, 40 ms each, 256 colours."""
    frames = read_sampled(clip, CLIP_SECONDS * CLIP_FPS).frames
    pictures = [Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) for frame in frames]
    pictures[0].save(out, save_all=True, append_images=pictures[1:], duration=1000 // CLIP_FPS, loop=0)
    return out


def make_photo(source: Path, out: Path) -> Path:
    """A 48-megapixel JPEG: a frame of a corpus clip enlarged, its faces with it."""
    frame = read_sampled(source, 1).frames[0]
    enlarged = cv2.resize(
        frame, None, fx=PHOTO_ENLARGEMENT, fy=PHOTO_ENLARGEMENT, interpolation=cv2.INTER_CUBIC
    )
    cv2.imwrite(str(out), enlarged, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out


def large_photo_seconds(model_dir: Path, photo: Path, repeats: int = 3) -> dict[str, Any]:
    """`detect` on a large photo, read as the predictor reads it (shrunk to MAX_FRAME_PIXELS) and as
    decoded, in the same run: the median wall time, verdict and probability of each, and the ratio."""
    found: dict[str, Any] = {}
    for label, budget in (("shrunk", MAX_FRAME_PIXELS), ("as_decoded", None)):
        predictor = Predictor(model_dir, max_frame_pixels=budget)
        predictor.predict(photo)  # warm
        walls, prediction = [], None
        for _ in range(repeats):
            forget_recent_features()
            started = time.perf_counter()
            prediction = predictor.predict(photo)
            walls.append(time.perf_counter() - started)
        found[label] = {
            "seconds_median": round(statistics.median(walls), 3),
            "verdict": prediction.verdict,
            "probability": prediction.probability,
        }
    found["as_decoded_over_shrunk"] = round(
        found["as_decoded"]["seconds_median"] / found["shrunk"]["seconds_median"], 2
    )
    return found


def _timed_runs(predictor: Predictor, path: Path, frames: int, repeats: int = 5) -> list[Prediction]:
    predictor.predict(path, frames)  # warm: the face detector is built, kernels are chosen
    runs = []
    for _ in range(repeats):
        forget_recent_features()  # each run computes its faces' features, as a new upload would
        runs.append(predictor.predict(path, frames))
    return runs


def _median_seconds(runs: list[Prediction], stage: str | None = None) -> float:
    """The median wall time of the runs, or of one of their stages."""
    return statistics.median(r.seconds.get(stage, 0.0) if stage else sum(r.seconds.values()) for r in runs)


def classifier_faces_per_second(model: Detector, crops: list[np.ndarray], repeats: int = 3) -> float:
    """Faces scored per second, in batches of 32; a clip model also judges them as clips of 16 faces
    (one track each), as it judges videos."""
    tracks = pd.DataFrame({"video_id": np.arange(len(crops)) // 16, "frame": np.arange(len(crops))})

    def score() -> None:
        scores = score_crops(model, crops, batch_size=32)
        if model.clip_model:
            track_clip_logits(model, tracks, scores.embeddings)

    score_crops(model, crops[:8])  # warm-up: first calls allocate and pick kernels
    seconds = 0.0
    for _ in range(repeats):
        forget_recent_features()
        started = time.perf_counter()
        score()
        seconds += time.perf_counter() - started
    return repeats * len(crops) / seconds


def run_bench_detect(
    model_dir: Path,
    clip_source: Path,
    faces_dir: Path,
    out_dir: Path,
    frames: int = 16,
    trained: Sequence[Path] = (),
    manifest_path: Path = Path("data/manifest/manifest.parquet"),
) -> dict:
    """`trained`: model folders whose test-split video AUC and ECE fill their row of the models table.
    Frozen-backbone models compute every feature here: no feature store, no recent features."""
    use_store(None)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)  # the predictor's own policy (one thread per request), for every figure
    predictor = Predictor(model_dir)
    with tempfile.TemporaryDirectory() as scratch:
        clip = make_clip(clip_source, Path(scratch) / "clip10s.mp4")
        runs = _timed_runs(predictor, clip, frames)
        gif_runs = _timed_runs(predictor, make_gif(clip, Path(scratch) / "clip10s.gif"), frames)
        photo = large_photo_seconds(model_dir, make_photo(clip_source, Path(scratch) / "photo.jpg"))
    wall, gif_wall = _median_seconds(runs), _median_seconds(gif_runs)
    split = {stage: _median_seconds(runs, stage) for stage in ("decode", "faces", "motion", "classify")}
    gif_decode = _median_seconds(gif_runs, "decode")
    crops = [read_crop(str(p)) for p in sorted(faces_dir.glob("crops/*/*.png"))[:128]]
    figures: dict[str, Any] = {
        "clip": f"{CLIP_SECONDS} s, 640x360, {CLIP_FPS} fps; {frames} frames sampled",
        "torch_threads": torch.get_num_threads(),
        "detect_seconds_median": round(wall, 3),
        "detect_seconds_max": round(max(sum(r.seconds.values()) for r in runs), 3),
        "split_seconds_median": {k: round(v, 3) for k, v in split.items()},
        "verdict": runs[0].verdict,
        "probability": runs[0].probability,
        "faces_classified": len(runs[0].faces),
        "classifier_faces_per_s": round(classifier_faces_per_second(predictor.model, crops), 1),
        "gif": {
            "seconds_median": round(gif_wall, 3),
            "decode_seconds_median": round(gif_decode, 3),
            "over_mp4": round(gif_wall / wall, 2),
            "decode_over_mp4": round(gif_decode / split["decode"], 2),
            "verdict": gif_runs[0].verdict,
            "probability": gif_runs[0].probability,
        },
        "photo_48mp": photo,
        "models": _model_table(crops, _test_metrics(trained, faces_dir, manifest_path, out_dir)),
    }
    (out_dir / "detect.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _test_metrics(
    trained: Sequence[Path], faces_dir: Path, manifest_path: Path, out_dir: Path
) -> dict[tuple[str, int], dict[str, float | None]]:
    """Video-level test AUC and ECE of each trained model, keyed by (model name, input size)."""
    found = {}
    for model_dir in trained:
        cfg = EvaluateConfig(
            model_dir=str(model_dir),
            faces_dir=str(faces_dir),
            manifest_path=str(manifest_path),
            out_dir=str(out_dir / "evaluate" / Path(model_dir).name),
        )
        result = run_evaluate(cfg, progress=False)
        model = result.metrics["model"]
        found[(model["name"], model["input_size"])] = {
            "video_auc": result.metrics["video"]["auc"],
            "video_ece": result.metrics["video"]["ece"],
        }
    return found


def _model_table(
    crops: list[np.ndarray], test_metrics: dict[tuple[str, int], dict[str, float | None]]
) -> list[dict[str, Any]]:
    rows = []
    for name in (*FRAME_MODELS, CLIP_MODEL):
        for size in sorted({128, 224} | {s for n, s in test_metrics if n == name}):
            with initial_weights_skipped():  # speed does not depend on the weights' values
                model = crop_detector(name, size, frame_model=CLIP_FRAME_MODEL).eval()
            rows.append(
                {
                    "model": name,
                    "input_size": size,
                    "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                    "faces_per_s": round(classifier_faces_per_second(model, crops[:64], repeats=2), 1),
                    **test_metrics.get((name, size), {"video_auc": None, "video_ece": None}),
                }
            )
    return rows


def format_figures(figures: dict[str, Any]) -> str:
    split, photo, gif = figures["split_seconds_median"], figures["photo_48mp"], figures["gif"]
    lines = [
        f"dfguard detect, {figures['clip']}, model warm, {figures['torch_threads']} torch threads:",
        f"  wall {figures['detect_seconds_median']:.2f} s median "
        f"(max {figures['detect_seconds_max']:.2f} s): "
        f"decode {split['decode']:.2f} s, faces {split['faces']:.2f} s, motion {split['motion']:.2f} s, "
        f"classify {split['classify']:.2f} s",
        f"  {figures['faces_classified']} faces classified; "
        f"classifier alone: {figures['classifier_faces_per_s']:.0f} faces/s",
        f"  the clip as an animated GIF: {gif['seconds_median']:.2f} s ({gif['over_mp4']:.1f}x the MP4's), "
        f"decode {gif['decode_seconds_median']:.2f} s ({gif['decode_over_mp4']:.1f}x); "
        f"p(fake) {gif['probability']} vs {figures['probability']}",
        f"  a 48-megapixel photo: {photo['shrunk']['seconds_median']:.2f} s shrunk to 4K UHD, "
        f"{photo['as_decoded']['seconds_median']:.2f} s as decoded ({photo['as_decoded_over_shrunk']:.1f}x); "
        f"p(fake) {photo['shrunk']['probability']} vs {photo['as_decoded']['probability']}",
        "",
        pd.DataFrame(figures["models"]).to_string(index=False),
    ]
    return "\n".join(lines)
