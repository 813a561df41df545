"""`dfguard bench summary`: one table of every benchmark's figures, read from the JSON each one wrote
under `bench/`, with the machine they ran on.

Each figure that can be is a ratio against a baseline timed in the same run (extraction against the
dlib peer, the service against the bare predictor, the fine-tuned model against the champion), since
absolute times on a shared 2-core machine drift by tens of percent from one hour to the next; the
absolute ones are labelled as this machine's. A benchmark that has not been run says so and gives its
command instead of a number.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, str, str]  # figure, value, how it compares


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        models = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                  if line.startswith("model name")]  # fmt: skip
        cpu = models[0] if models else cpu
    memory_gib = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": usable,
        "memory_gib": memory_gib,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "os": platform.platform(terse=True),
    }


def _extract(f: dict[str, Any]) -> list[Row]:
    return [
        (
            "face extraction, videos/min",
            f"{f['ours']['videos_per_min']} ({f['workers']} workers; recall {f['ours']['recall']})",
            f"x{f['speedup_vs_peer']} the dlib HOG pipeline (recall {f['peer_dlib_hog']['recall']})",
        ),
        (
            "decoding's share of extraction time",
            f"{f['decode_share_of_wall_time']:.0%}",
            "the floor: decoding the sampled frames alone",
        ),
    ]


def _detect(f: dict[str, Any]) -> list[Row]:
    split = f["split_seconds_median"]
    rows = [
        (
            "`dfguard detect`, 10 s clip (this machine)",
            f"{f['detect_seconds_median']:.2f} s ({f['torch_threads']} thread)",
            f"classify {split['classify'] / f['detect_seconds_median']:.0%} of it, "
            f"faces {split['faces'] / f['detect_seconds_median']:.0%}",
        ),
        (
            "classifier alone (this machine)",
            f"{f['classifier_faces_per_s']:.1f} faces/s",
            f"{f['faces_classified']} faces per clip",
        ),
        (
            "the clip as a GIF",
            f"{f['gif']['seconds_median']:.2f} s",
            f"x{f['gif']['over_mp4']} the MP4's time",
        ),
        (
            "a 48 MP photo, shrunk to 4K first",
            f"{f['photo_48mp']['shrunk']['seconds_median']:.2f} s",
            f"x{1 / f['photo_48mp']['as_decoded_over_shrunk']:.2f} the time as decoded",
        ),
    ]
    for model in f.get("models", []):
        rows.append(
            (
                f"{model['model']} at {model['input_size']} px",
                f"{model['faces_per_s']} faces/s",
                f"{model['parameters_m']} M parameters",
            )
        )
    return rows


def _serve(f: dict[str, Any]) -> list[Row]:
    return [
        (
            f"service, {row['input']}, {row['clients']} clients",
            f"{row['requests_per_s']:.2f} req/s, p99 {row['p99_ms']} ms, errors {row['errors']}",
            f"x{row['throughput_vs_bare']} the bare predictor's throughput",
        )
        for row in f["rows"]
        if row["mode"] == "service" and row.get("throughput_vs_bare") is not None
    ]


def _load(f: dict[str, Any]) -> list[Row]:
    return [
        (
            f"load: {f['clients']} clients for {f['seconds']:g} s",
            f"{f['requests_per_s']:.2f} req/s, p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms",
            f"{f['errors']} errors, {f['lost']} of {f['prediction_ids']} predictions lost",
        ),
        (
            "service memory under load (this machine)",
            f"{f['rss_before_mb']} -> {f['rss_after_mb']} MB",
            f"growth {f['rss_growth_mb']} MB, bound {f['rss_growth_bound_mb']} MB",
        ),
    ]


def _loop(f: dict[str, Any]) -> list[Row]:
    rows = []
    for row in f["rows"]:
        before, after = row["holdout_before"], row["holdout_after"]
        serving = row["seconds"].get("last_label_to_serving")
        rows.append(
            (
                f"loop {f['shift']}, {row['labels']} labels, {row['design']}",
                f"holdout AUC {before['auc']:.3f} -> {after['auc']:.3f}, fakes called FAKE "
                f"{before['fakes_called_fake']:.2f} -> {after['fakes_called_fake']:.2f}; "
                f"{'promoted' if row['promoted'] else 'refused: ' + ', '.join(row['failed'])}",
                f"forgetting {row['forgetting']:+.3f} on the frozen suite"
                + (f"; last label to serving {serving:.0f} s" if serving is not None else ""),
            )
        )
    return rows


# (name, JSON under the bench folder, its rows, the command that makes it)
SECTIONS: tuple[tuple[str, str, Callable[[dict[str, Any]], list[Row]], str], ...] = (
    ("extraction", "extract/bench.json", _extract, "make bench-extract"),
    ("detection", "detect/detect.json", _detect, "make bench-detect"),
    ("service", "serve/serve.json", _serve, "make bench-serve"),
    ("load", "load/load.json", _load, "make bench-load"),
    ("loop: reshape", "loop-reshape/loop.json", _loop, "make bench-loop"),
    ("loop: resynth", "loop-resynth/loop.json", _loop, "make bench-loop"),
    (
        "loop: resynth clips",
        "loop-resynth-video/loop.json",
        _loop,
        "dfguard bench loop --shift resynth --media video",
    ),
)


def write_summary(bench_dir: Path) -> Path:
    """bench_dir/summary.md from the benchmarks' JSON; returns its path."""
    described = machine()
    lines = [
        "# dfguard benchmarks",
        "",
        "Measured on: " + ", ".join(f"{key} {value}" for key, value in described.items()) + ".",
        "Ratios compare figures timed in the same run; absolute times are this machine's.",
        "",
        "| benchmark | figure | value | against |",
        "|---|---|---|---|",
    ]
    for name, relative, rows_of, command in SECTIONS:
        path = bench_dir / relative
        if not path.is_file():
            lines.append(f"| {name} | not run | - | `{command}` |")
            continue
        try:
            rows = rows_of(json.loads(path.read_text()))
        except (KeyError, TypeError, ValueError) as err:
            lines.append(f"| {name} | unreadable ({type(err).__name__}: {err}) | - | rerun `{command}` |")
            continue
        lines += [f"| {name} | {figure} | {value} | {against} |" for figure, value, against in rows]
    out = bench_dir / "summary.md"
    bench_dir.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    (bench_dir / "machine.json").write_text(json.dumps(described, indent=2) + "\n")
    return out
