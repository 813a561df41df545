"""`dfguard bench load`: a running detection service under N concurrent clients for D seconds, each a
loop of `POST /detect` uploads of real media, and what must hold afterwards: no error, every answered
prediction in the store, and the service's memory grown no more than a bound.

Errors are every answer that is not 2xx, and every request that got no answer (429s are counted among
them, and apart too: the bench service runs without a rate limit, a test's with a pace under it). The
memory is the resident set of the service's whole process tree (`dfguard serve`, BentoML's arbiter and
its workers), read after a warm-up (the first requests build the face detector) and again once the
store has every prediction, so the growth is what the load left behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from dfguard.config import FeedbackConfig, load_config
from dfguard.feedback import open_store
from dfguard.plots import plot_load
from dfguard.serving.bench import start_service, write_photo

DEFAULT_CLIENTS, DEFAULT_SECONDS = 32, 60.0
# Growth of the service's resident memory over a run that passes: past the warm-up, a service that
# keeps nothing per request stays flat but for allocator slack and BentoML's buffers of the requests
# in flight; a leak of even 100 kB per request passes this within a 60 s run at bench rates.
DEFAULT_RSS_GROWTH_BOUND_MB = 256.0
WARMUP_REQUESTS = 3  # per upload, before the memory is first read
REQUEST_TIMEOUT_S = 300.0
STORE_TIMEOUT_S = 120.0  # the store writes in the background: how long to wait for the last rows
MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One request: when it started (s from the run's start), how long it took, what came back."""

    started_s: float
    latency_s: float
    status: int  # 0 when no answer came (a connection error, a timeout)
    prediction_id: str | None
    verdict: str | None  # FAKE, REAL, UNCERTAIN or a status such as NO_FACE
    error: str  # "" for a 2xx

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class LoadRun:
    figures: dict[str, Any]
    samples: list[Sample]


def tree_rss_bytes(pid: int) -> int:
    """The resident memory of process `pid` and all its descendants (those that exit meanwhile count
    as nothing)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


async def _drive(
    url: str,
    uploads: Sequence[tuple[str, bytes]],
    clients: int,
    seconds: float,
    headers: Mapping[str, str],
    max_rate_per_s: float | None,
) -> list[Sample]:
    """`clients` concurrent loops of uploads until `seconds` have passed; a request started before then
    is waited for. With `max_rate_per_s` the requests of all clients together start no faster."""
    samples: list[Sample] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + seconds
    next_slot = start

    async def paced() -> None:
        nonlocal next_slot
        if max_rate_per_s is None:
            return
        slot = max(next_slot, loop.time())
        next_slot = slot + 1 / max_rate_per_s
        await asyncio.sleep(slot - loop.time())

    async def client(index: int, http: httpx.AsyncClient) -> None:
        turn = index  # clients start at different uploads so the mix is even from the first second
        while loop.time() < deadline:
            await paced()
            if loop.time() >= deadline:
                return
            name, data = uploads[turn % len(uploads)]
            turn += 1
            started = loop.time()
            status, error = 0, ""
            answer: dict[str, Any] = {}
            try:
                response = await http.post("/detect", files={"file": (name, data)})
                status = response.status_code
                if 200 <= status < 300:
                    answer = response.json()
                else:
                    error = response.text[:300]
            except (httpx.HTTPError, ValueError) as err:  # ValueError: a 2xx body that is no JSON
                error = f"{type(err).__name__}: {err}"
            latency = loop.time() - started
            sample = Sample(
                started - start, latency, status, answer.get("prediction_id"), answer.get("verdict"), error
            )
            samples.append(sample)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, headers=dict(headers), timeout=REQUEST_TIMEOUT_S, limits=limits
    ) as http:
        await asyncio.gather(*(client(index, http) for index in range(clients)))
    return samples


def _wait_for_store(store: FeedbackConfig, ids: set[str], since: datetime, timeout_s: float) -> set[str]:
    """The ids of `ids` still missing from the store once all are there or `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    with open_store(store) as opened:
        while True:
            stored = set(opened.predictions(since=since)["prediction_id"])
            missing = ids - stored
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.5)


def run_load(
    url: str,
    uploads: Sequence[tuple[str, bytes]],
    service_pid: int,
    store: FeedbackConfig,
    clients: int = DEFAULT_CLIENTS,
    seconds: float = DEFAULT_SECONDS,
    headers: Mapping[str, str] | None = None,
    max_rate_per_s: float | None = None,
    rss_growth_bound_mb: float = DEFAULT_RSS_GROWTH_BOUND_MB,
) -> LoadRun:
    """Load the service at `url` (process `service_pid`, writing to `store`) with `clients` loops of
    `uploads` (file name, bytes) for `seconds`, and check it: requests/s, latency percentiles, errors,
    the stored predictions against the answered ones, and the memory growth against its bound."""
    if clients < 1 or seconds <= 0 or not uploads:
        raise ValueError(
            f"need clients >= 1, seconds > 0 and an upload: {clients}, {seconds}, {len(uploads)}"
        )
    headers = headers or {}
    with httpx.Client(base_url=url, headers=dict(headers), timeout=REQUEST_TIMEOUT_S) as http:
        for name, data in uploads:
            for _ in range(WARMUP_REQUESTS):
                warmup = http.post("/detect", files={"file": (name, data)}).raise_for_status()
    model = warmup.json()["model"]
    rss_before = tree_rss_bytes(service_pid)
    # The store's times are the service's clock, this machine's: a second of slack covers rounding.
    since = datetime.now(UTC) - timedelta(seconds=1)
    wall_started = time.perf_counter()
    samples = asyncio.run(_drive(url, uploads, clients, seconds, headers, max_rate_per_s))
    wall_s = time.perf_counter() - wall_started
    answered = {s.prediction_id for s in samples if s.ok and s.prediction_id}
    store_started = time.perf_counter()
    missing = _wait_for_store(store, answered, since, STORE_TIMEOUT_S)
    store_wait_s = time.perf_counter() - store_started
    rss_after = tree_rss_bytes(service_pid)

    ok = [s for s in samples if s.ok]
    latency_ms = np.asarray([s.latency_s for s in ok]) * 1000
    percentiles = {
        name: round(float(np.percentile(latency_ms, q)), 1) if len(ok) else None
        for name, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99))
    }
    growth_mb = (rss_after - rss_before) / MB
    errors = [s for s in samples if not s.ok]
    figures = {
        "clients": clients,
        "seconds": seconds,
        "wall_s": round(wall_s, 2),
        "uploads": [{"name": name, "bytes": len(data)} for name, data in uploads],
        "max_rate_per_s": max_rate_per_s,
        "model": model,
        "requests": len(samples),
        "requests_per_s": round(len(samples) / wall_s, 3),
        "ok": len(ok),
        **percentiles,
        "verdicts": dict(Counter(s.verdict for s in ok)),
        "errors": len(errors),
        "rate_limited": sum(s.status == 429 for s in samples),
        "errors_by_status": dict(Counter(str(s.status) for s in errors)),
        "first_errors": [asdict(s) for s in errors[:5]],
        "prediction_ids": len(answered),
        "stored": len(answered) - len(missing),
        "lost": len(missing),
        "lost_ids": sorted(missing)[:10],
        "store_wait_s": round(store_wait_s, 2),
        "rss_before_mb": round(rss_before / MB, 1),
        "rss_after_mb": round(rss_after / MB, 1),
        "rss_growth_mb": round(growth_mb, 1),
        "rss_growth_bound_mb": rss_growth_bound_mb,
        "rss_growth_ok": growth_mb <= rss_growth_bound_mb,
        "cpu_count": os.cpu_count(),
    }
    figures["passed"] = not errors and not missing and figures["rss_growth_ok"]
    return LoadRun(figures, samples)


def write_report(run: LoadRun, out_dir: Path) -> tuple[Path, Path]:
    """`load.json` (the figures) and `load.png` (latency over the run, and its histogram) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / "load.json"
    summary.write_text(json.dumps(run.figures, indent=2) + "\n")
    percentiles = {
        name.removesuffix("_ms"): run.figures[name]
        for name in ("p50_ms", "p95_ms", "p99_ms")
        if run.figures[name] is not None
    }
    plot = plot_load(
        [s.started_s for s in run.samples],
        [s.latency_s * 1000 for s in run.samples],
        [s.ok for s in run.samples],
        percentiles,
        out_dir / "load.png",
    )
    return summary, plot


def bench_load(
    source_video: Path,
    out_dir: Path,
    params: Path,
    model: str | None = None,
    clients: int = DEFAULT_CLIENTS,
    seconds: float = DEFAULT_SECONDS,
    with_clip: bool = False,
    rss_growth_bound_mb: float = DEFAULT_RSS_GROWTH_BOUND_MB,
) -> LoadRun:
    """The load against a `dfguard serve` started for it (`start_service`: auth and the rate limit off,
    a fresh store) with `params`' champion, or `model`: uploads of a photo (the first frame of
    `source_video`), and the video itself too `with_clip`. Writes the report to `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    photo = write_photo(source_video, out_dir / "photo.jpg")
    uploads = [(photo.name, photo.read_bytes())]
    if with_clip:
        uploads.append((source_video.name, source_video.read_bytes()))
    with tempfile.TemporaryDirectory(prefix="dfguard-load-store-") as store_dir:
        process, url = start_service(Path(store_dir), out_dir / "serve.log", model, params)
        try:
            # Where the service writes: the fresh root, or the params' database when they name one.
            store = load_config(params, {"feedback.root": store_dir}).feedback
            run = run_load(
                url,
                uploads,
                process.pid,
                store,
                clients,
                seconds,
                rss_growth_bound_mb=rss_growth_bound_mb,
            )
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    write_report(run, out_dir)
    return run
