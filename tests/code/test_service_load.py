"""The service under load, through the function `dfguard bench load` runs: 8 clients for 20 s posting a
real face photo to the shared test service (auth on, so with a key, paced under its rate limit), then
no error, every answered prediction in the store, and the memory grown less than the bound. Figures and
plot land in build/test-output/load/."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_helpers import RATE_PER_S, SECRET

from dfguard.serving.load import run_load, write_report

OUTPUT = Path(__file__).resolve().parents[2] / "build" / "test-output" / "load"
CLIENTS, SECONDS = 8, 20.0
RSS_GROWTH_BOUND_MB = 150.0


@pytest.mark.slow
def test_load_leaves_no_error_no_lost_prediction_and_no_leak(service, inference_media):
    photo = inference_media / "portrait.png"
    run = run_load(
        service.url,
        [(photo.name, photo.read_bytes())],
        service.pid,
        service.feedback,
        clients=CLIENTS,
        seconds=SECONDS,
        headers={"Authorization": f"Bearer {SECRET}"},
        # Under the key's sustained rate: the limiter's 429s would be errors here.
        max_rate_per_s=0.8 * RATE_PER_S,
        rss_growth_bound_mb=RSS_GROWTH_BOUND_MB,
    )
    write_report(run, OUTPUT)
    figures = run.figures
    print(figures)
    assert figures["requests"] >= CLIENTS and figures["ok"] == figures["requests"]
    assert figures["errors"] == 0, figures["first_errors"]
    assert figures["prediction_ids"] == figures["ok"] and figures["lost"] == 0, figures["lost_ids"]
    assert figures["rss_before_mb"] > 0
    assert figures["rss_growth_mb"] <= RSS_GROWTH_BOUND_MB and figures["passed"]
    assert (OUTPUT / "load.json").is_file() and (OUTPUT / "load.png").stat().st_size > 0
