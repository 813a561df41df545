"""`dfguard bench serve`: the service under 1, 8 and 32 concurrent clients against the bare `Predictor`
in this process on the same inputs, in the same run, so the ratio says what HTTP, the middleware and
the prediction store cost, whatever the machine's speed.

At each level every client sends the same number of requests back to back (`PER_CLIENT`: more for the
photo, one for the clip, which takes seconds), and throughput is answers over the level's wall time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess  # nosec B404  # starts this virtualenv's `dfguard serve`, no shell
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

from dfguard.faces.frames import read_sampled
from dfguard.inference.predictor import Predictor
from dfguard.plots import plot_throughput
from dfguard.serving.launch import free_port, wait_until_ready

LEVELS = (1, 8, 32)
PER_CLIENT = {"photo": 4, "clip": 1}
JUDGED = frozenset({"FAKE", "REAL", "UNCERTAIN"})
READY_TIMEOUT_S = 180


def _load(call: Callable[[], bool], clients: int, per_client: int) -> dict[str, Any]:
    """`clients` threads each making `per_client` calls back to back: answers/s over the wall time of
    all of them, latency percentiles, failed answers."""
    latencies: list[float] = []
    errors = 0

    def client() -> None:
        nonlocal errors
        for _ in range(per_client):
            started = time.perf_counter()
            errors += not call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p99_ms": round(float(np.percentile(ms, 99)), 1),
        "errors": errors,
    }


def start_service(
    store_dir: Path, log: Path, model: str | Path | None = None, params: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """`dfguard serve` on a free localhost port, in its own process group, writing its predictions to a
    store under `store_dir`, with auth off and no rate limit to speak of (the load is the caller's, on
    localhost only); it judges with `model` (a folder or URI), else `params`' serve.model_uri (the
    registry's champion by default). Returns once it answers, with its URL."""
    port = free_port()
    overrides = [
        *(["--params", str(params)] if params is not None else []),
        "--set", f"feedback.root={store_dir}", "--set", "serve.auth=off",
        "--set", "serve.rate_per_s=100000", "--set", "serve.rate_burst=100000",
    ]  # fmt: skip
    model_flag = ["--model", str(model)] if model is not None else []
    dfguard = Path(sys.executable).parent / "dfguard"
    with log.open("wb") as out:
        process = subprocess.Popen(  # nosec B603  # this virtualenv's dfguard, fixed argv, no shell
            [str(dfguard), *overrides, "serve", *model_flag, "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log, READY_TIMEOUT_S)
    except RuntimeError:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process, url


def write_photo(video: Path, out: Path) -> Path:
    """The first frame of `video` as a JPEG (quality 92): a real photo of the corpus' faces."""
    cv2.imwrite(str(out), read_sampled(video, 1).frames[0], [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out


def run_bench_serve(model_dir: Path, clip: Path, out_dir: Path) -> dict[str, Any]:
    """The table of both ways of judging a photo (a frame of `clip`) and `clip` at every level."""
    out_dir.mkdir(parents=True, exist_ok=True)
    photo = write_photo(clip, out_dir / "photo.jpg")
    inputs = {"photo": (photo.read_bytes(), ".jpg"), "clip": (clip.read_bytes(), clip.suffix)}
    predictor = Predictor(model_dir)
    rows = []
    for name, (data, suffix) in inputs.items():

        def judge(data: bytes = data, suffix: str = suffix) -> bool:
            return predictor.predict_bytes(data, "upload" + suffix).judged

        judge()  # warm: the face detector is built on first use
        for clients in LEVELS:
            figures = _load(judge, clients, PER_CLIENT[name])
            rows.append({"input": name, "mode": "bare", **figures})
            print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory(prefix="dfguard-bench-store-") as store:
        process, url = start_service(Path(store), out_dir / "serve.log", model_dir)
        try:
            for name, (data, suffix) in inputs.items():
                with httpx.Client(base_url=url, timeout=600) as http:

                    def call(data: bytes = data, suffix: str = suffix, http: httpx.Client = http) -> bool:
                        response = http.post("/detect", files={"file": ("f" + suffix, data)})
                        return response.status_code == 200 and response.json()["verdict"] in JUDGED

                    call()
                    for clients in LEVELS:
                        figures = _load(call, clients, PER_CLIENT[name])
                        rows.append({"input": name, "mode": "service", **figures})
                        print(rows[-1], flush=True)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    for row in rows:
        if row["mode"] == "service":
            bare = next(r for r in rows if r["mode"] == "bare" and r["input"] == row["input"]
                        and r["clients"] == row["clients"])  # fmt: skip
            row["throughput_vs_bare"] = (
                round(row["requests_per_s"] / bare["requests_per_s"], 3) if bare["requests_per_s"] else None
            )
    result = {"requests_per_client": PER_CLIENT, "cpu_count": os.cpu_count(), "rows": rows}
    (out_dir / "serve.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_throughput(rows, out_dir / "serve.png", LEVELS)
    return result
