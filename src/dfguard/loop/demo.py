"""`dfguard loop demo`: the loop shown end to end on a shift the champion has not seen, with a
SIMULATED reviewer who labels from the ground truth. A benchmark and a test, never a feature: the
reviewer's labels are marked as simulated (reviewer `simulated-reviewer`, a note saying so), and no
setting turns this on for real traffic.

The shift is the demo corpus re-encoded as social media and messaging apps pass video on: each frame
shrunk to `DOWNSCALE` of its size and back (detail lost), then H.264 at CRF `SHIFT_CRF` (blocking).
Reals and fakes are degraded alike, so the label stays true; what changes is the evidence, which is
what production drift looks like. The stream is split by person: the test split's people (never
trained on) are the holdout, judged before and after the loop and never labelled; the others' clips
are the pool the simulated reviewer labels from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess  # nosec B404  # starts this virtualenv's own service, never a shell
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from dfguard.config import Config
from dfguard.feedback import PredictionStore, open_store
from dfguard.loop.gate import Action
from dfguard.loop.run import run_loop
from dfguard.media.video import write_video
from dfguard.metrics import roc_auc
from dfguard.registry import configure
from dfguard.servers import free_port, stop_process, wait_until_ready
from dfguard.serving.client import DetectionClient
from dfguard.serving.launch import service_server

SIMULATED_REVIEWER = "simulated-reviewer"
SIMULATED_NOTE = "SIMULATED: labelled from the ground truth by dfguard loop demo"
DOWNSCALE = 0.35
SHIFT_CRF = 38
HOLDOUT_SPLIT = "test"  # the people never trained on
CONCURRENT_CALLS = 4  # serve.threads: what one service worker judges at once


@dataclass(frozen=True)
class StreamItem:
    path: Path
    label: str  # the ground truth: real or fake
    method: str
    holdout: bool
    person: str = ""  # who the item shows (the manifest's identity), for per-person figures


def degrade(frame: np.ndarray, scale: float = DOWNSCALE) -> np.ndarray:
    """A frame shrunk to `scale` and back to its size: what a low-resolution re-share leaves."""
    height, width = frame.shape[:2]
    small = cv2.resize(
        frame, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
    )
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def shifted_stream(
    manifest_path: str | Path, dataset_dir: str | Path, out_dir: str | Path, progress: bool = True
) -> list[StreamItem]:
    """Every clip of the manifest, degraded (`degrade`, then CRF `SHIFT_CRF`) under `out_dir`; made once
    (a clip already written is kept)."""
    manifest = pd.read_parquet(manifest_path)
    manifest = manifest[manifest["media_kind"] == "video"]
    out = Path(out_dir)
    items = []
    for row in tqdm(manifest.itertuples(), total=len(manifest), desc="shifted stream", disable=not progress):
        target = out / row.label / f"{row.video_id}.mp4"
        if not target.is_file():
            capture = cv2.VideoCapture(str(Path(dataset_dir) / row.path))
            frames = []
            while (read := capture.read())[0]:
                frames.append(degrade(read[1]))
            capture.release()
            if not frames:
                raise ValueError(f"{Path(dataset_dir) / row.path}: no frames could be read")
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial.mp4")
            write_video(frames, partial, round(row.fps), SHIFT_CRF)
            partial.replace(target)
        person = str(getattr(row, "target_identity", "") or "")
        items.append(StreamItem(target, row.label, row.method, row.split == HOLDOUT_SPLIT, person))
    return items


def pool_order(items: Sequence[StreamItem], seed: int) -> list[StreamItem]:
    """The pool (non-holdout) in the order the simulated reviewer meets it: shuffled, reals and fakes
    alternating, so any first N labels are balanced."""
    rng = np.random.default_rng(seed)
    pool = [item for item in items if not item.holdout]
    reals = [pool[i] for i in rng.permutation(len(pool)) if pool[i].label == "real"]
    fakes = [pool[i] for i in rng.permutation(len(pool)) if pool[i].label == "fake"]
    ordered = []
    for pair in zip(reals, fakes, strict=False):
        ordered += list(pair)
    return ordered


def judge_all(
    client: DetectionClient, items: Sequence[StreamItem], desc: str, progress: bool = True
) -> list[dict[str, Any]]:
    """The service's answer for each item, in order, `CONCURRENT_CALLS` at a time (the service judges
    that many at once: one call at a time would leave cores idle)."""
    with ThreadPoolExecutor(CONCURRENT_CALLS) as pool:
        answers = pool.map(lambda item: client.detect(item.path), items)
        return list(tqdm(answers, total=len(items), desc=desc, unit="clip", disable=not progress))


def label_as_simulated(
    store: PredictionStore,
    items: Sequence[StreamItem],
    answers: Sequence[dict[str, Any]],
    timeout_s: float = 60.0,
) -> int:
    """The simulated reviewer's label (the ground truth) on each judged answer, once the service's
    writer has stored it; returns how many were labelled (an answer with no face has nothing to learn
    from and is skipped)."""
    labelled = 0
    for item, answer in zip(items, answers, strict=True):
        if not answer.get("faces"):
            continue
        deadline = time.monotonic() + timeout_s
        while store.get(answer["prediction_id"]) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"prediction {answer['prediction_id']} never reached the store")
            time.sleep(0.2)
        store.add_label(answer["prediction_id"], item.label, SIMULATED_REVIEWER, note=SIMULATED_NOTE)
        labelled += 1
    return labelled


def verdict_figures(items: Sequence[StreamItem], answers: Sequence[dict[str, Any]]) -> dict[str, float]:
    """What clients got on these items: AUC of the probability, accuracy of the verdicts given (FAKE or
    REAL), the share UNCERTAIN, and per class the share called right, over the items judged."""
    judged = [(item, a) for item, a in zip(items, answers, strict=True) if a.get("probability") is not None]
    y = np.array([item.label == "fake" for item, _ in judged], int)
    p = np.array([a["probability"] for _, a in judged], float)
    verdicts = np.array([a["verdict"] for _, a in judged])
    decided = verdicts != "UNCERTAIN"
    right = (verdicts == "FAKE") == (y == 1)
    return {
        "n": len(judged),
        "auc": round(roc_auc(y, p), 4) if 0 < y.sum() < len(y) else float("nan"),
        "accuracy": round(float(right[decided].mean()), 4) if decided.any() else float("nan"),
        "uncertain": round(float((~decided).mean()), 4) if len(judged) else float("nan"),
        "fakes_called_fake": round(float((verdicts[y == 1] == "FAKE").mean()), 4)
        if y.any()
        else float("nan"),
        "reals_called_real": round(float((verdicts[y == 0] == "REAL").mean()), 4)
        if (y == 0).any()
        else float("nan"),
        "reals_called_fake": round(float((verdicts[y == 0] == "FAKE").mean()), 4)
        if (y == 0).any()
        else float("nan"),
        "worst_person_reals_fake": _worst_person(judged, verdicts, y),
    }


def _worst_person(
    judged: list[tuple[StreamItem, dict[str, Any]]], verdicts: np.ndarray, y: np.ndarray
) -> float:
    """The largest share of one person's real items called FAKE (NaN when items name no person)."""
    people = np.array([item.person for item, _ in judged])
    reals = (y == 0) & (people != "")
    if not reals.any():
        return float("nan")
    frame = pd.DataFrame({"person": people[reals], "fake": verdicts[reals] == "FAKE"})
    return round(float(frame.groupby("person")["fake"].mean().max()), 4)


def wait_for_version(client: DetectionClient, version: str, timeout_s: float) -> float:
    """Seconds until the service answers with model `version` (it reloads when the alias moves)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if str(client.http.get("/model").json().get("version")) == str(version):
            return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"the service did not switch to version {version} within {timeout_s:.0f} s")


def run_demo(
    cfg: Config,
    params_path: Path,
    overrides: dict[str, Any],
    out_dir: Path,
    labels: int,
    server_url: str = "",
    api_key: str | None = None,
    progress: bool = True,
    stream_dir: Path | None = None,
    action: Action | None = None,
) -> dict[str, Any]:
    """The demonstration (see the module docstring): the shifted stream through the service (one
    started here on a free port unless `server_url` names a running one), `labels` simulated labels,
    one loop run, then the holdout judged again by whatever the service serves then. Returns the
    figures, also written to `out_dir`/demo.json. The stream is made in `stream_dir` (default
    `out_dir`/stream) unless it is there already; `action` overrides the loop gate's decision."""
    stream = stream_dir or out_dir / "stream"
    items = shifted_stream(cfg.extract.manifest_path, cfg.extract.dataset_dir, stream, progress)
    holdout = [item for item in items if item.holdout]
    pool = pool_order(items, cfg.train.seed)[:labels]
    if len(pool) < labels:
        raise ValueError(
            f"the stream's pool holds {len(pool)} balanced clips, fewer than the {labels} asked for"
        )
    with demo_service(cfg, params_path, overrides, out_dir, server_url) as url:
        client = DetectionClient(url, api_key)
        try:
            before = judge_all(client, holdout, "holdout, before", progress)
            champion = str(client.http.get("/model").json().get("version"))
            answers = judge_all(client, pool, "pool", progress)
            with open_store(cfg.feedback) as store:
                labelled = label_as_simulated(store, pool, answers)
                last_label = time.monotonic()
                result = run_loop(cfg, store, configure(cfg.registry), action, progress=progress)
            serving_s = None
            if result.promoted and result.challenger:
                wait_for_version(client, result.challenger, 10 * cfg.serve.reload_interval_s + 120)
                serving_s = round(time.monotonic() - last_label, 1)
            after = judge_all(client, holdout, "holdout, after", progress)
            served = str(client.http.get("/model").json().get("version"))
        finally:
            client.close()
    figures = {
        "shift": f"frames shrunk to {DOWNSCALE} and back, H.264 CRF {SHIFT_CRF}",
        "simulated_reviewer": SIMULATED_REVIEWER,
        "labels": labelled,
        "champion_before": champion,
        "served_after": served,
        "decision": result.decision.to_dict(),
        "challenger": result.challenger,
        "promoted": result.promoted,
        "checks": [check.to_dict() for check in result.checks],
        "holdout": {"before": verdict_figures(holdout, before), "after": verdict_figures(holdout, after)},
        "frozen_suite": result.scores.get("frozen", {}),
        "feedback_holdout": result.scores.get("holdout", {}),
        "seconds": {**result.seconds, "last_label_to_serving": serving_s},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "demo.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return figures


@contextmanager
def demo_service(
    cfg: Config, params_path: Path, overrides: dict[str, Any], out_dir: Path, server_url: str = ""
) -> Iterator[str]:
    """The URL of the service to use: `server_url`, or one started here on a free port with
    `overrides` that reloads every few seconds (stopped on the way out; its log in `out_dir`)."""
    if server_url:
        yield server_url
        return
    port = free_port(cfg.serve.host)
    settings = {**overrides, "serve.port": port, "serve.reload_interval_s": 5.0}
    server = service_server(dataclasses.replace(cfg.serve, port=port), params_path, settings)
    log_path = out_dir / "service.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log_file:
        # `service_server` builds the argv from this virtualenv's `dfguard` and the configuration.
        process = subprocess.Popen(  # nosec B603  # our own argv, no shell
            server.command,
            env={**os.environ, **server.env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_until_ready(server.url, process, log_path, 180.0)
            yield server.url
        finally:
            stop_process(process)
