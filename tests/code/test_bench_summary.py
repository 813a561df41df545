"""`dfguard bench summary`: one table from whatever benchmarks have run, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dfguard.bench.summary import SECTIONS, machine, write_summary

DFGUARD = Path(sys.executable).parent / "dfguard"


def _serve_rows(bare_rps: float, service_rps: float) -> dict:
    """serve.json as `dfguard bench serve` writes it, for one level (the ratio the bench computes)."""
    row = {"input": "clip", "clients": 8, "p50_ms": 900, "p99_ms": 1500, "errors": 0}
    return {
        "rows": [
            {**row, "mode": "bare", "requests_per_s": bare_rps},
            {**row, "mode": "service", "requests_per_s": service_rps,
             "throughput_vs_bare": round(service_rps / bare_rps, 3)},
        ]
    }  # fmt: skip


def test_benchmarks_not_run_name_their_command_and_the_machine_is_described(tmp_path: Path) -> None:
    text = write_summary(tmp_path).read_text()
    for _, _, _, command in SECTIONS:
        assert f"`{command}`" in text
    assert text.count("not run") == len(SECTIONS)
    described = json.loads((tmp_path / "machine.json").read_text())
    assert described == machine() and described["cores"] >= 1
    assert f"cores {described['cores']}" in text


def test_a_run_benchmark_shows_its_ratio_and_a_broken_one_does_not_stop_the_table(tmp_path: Path) -> None:
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "serve.json").write_text(json.dumps(_serve_rows(2.0, 1.5)))
    (tmp_path / "loop-reshape").mkdir()
    (tmp_path / "loop-reshape" / "loop.json").write_text('{"rows": [{"labels": 25}]}')  # a row cut short
    result = subprocess.run(
        [str(DFGUARD), "bench", "summary", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "summary.md").read_text()
    service = next(line for line in table.splitlines() if line.startswith("| service |"))
    assert "x0.75 the bare predictor's throughput" in service and "1.50 req/s" in service
    loop = next(line for line in table.splitlines() if line.startswith("| loop: reshape |"))
    assert "unreadable" in loop and "make bench-loop" in loop
    assert "| extraction | not run |" in table
    assert table in result.stdout
