"""Benchmarks: face extraction against its baselines, `dfguard detect` latency and the models table."""

from __future__ import annotations

import argparse
from pathlib import Path

from dfguard.cli.common import Commands, config_from
from dfguard.config import Config


def _bench_extract(args: argparse.Namespace) -> int:
    from dfguard.bench.extract import run_bench

    cfg = config_from(args, {}).extract
    run_bench(cfg, Path(args.out), frames_per_video=args.frames, max_videos=args.max_videos)
    return 0


def _bench_detect(args: argparse.Namespace) -> int:
    import pandas as pd

    from dfguard.bench.detect import format_figures, run_bench_detect

    cfg = config_from(args, {})
    manifest = pd.read_parquet(Path(cfg.ingest.out_dir) / "manifest.parquet")
    source = (
        Path(cfg.ingest.dataset_dir)
        / manifest[manifest["split"] == "test"].sort_values("path")["path"].iloc[0]
    )
    figures = run_bench_detect(
        Path(args.model),
        source,
        Path(cfg.extract.out_dir),
        Path(args.out),
        args.frames,
        trained=[Path(d) for d in args.trained],
        manifest_path=Path(cfg.evaluate.manifest_path),
    )
    print(format_figures(figures))
    return 0


def _first_test_fake(cfg: Config) -> Path:
    """The corpus' first fake clip of the test split (by path): the input of the service benchmarks."""
    import pandas as pd

    manifest = pd.read_parquet(Path(cfg.ingest.out_dir) / "manifest.parquet")
    test = manifest[(manifest["split"] == "test") & (manifest["label"] == "fake")].sort_values("path")
    return Path(cfg.ingest.dataset_dir) / test["path"].iloc[0]


def _bench_serve(args: argparse.Namespace) -> int:
    from dfguard.bench.detect import make_clip
    from dfguard.serving.bench import run_bench_serve

    cfg = config_from(args, {})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clip = make_clip(_first_test_fake(cfg), out / "clip10s.mp4")
    result = run_bench_serve(Path(args.model), clip, out)
    for row in result["rows"]:
        ratio = f"  x{row['throughput_vs_bare']:.2f} of bare" if "throughput_vs_bare" in row else ""
        print(
            f"{row['input']:<6} {row['mode']:<8} {row['clients']:>3} clients: {row['requests_per_s']:.2f}/s, "
            f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, errors {row['errors']}{ratio}"
        )
    return 0


def _bench_load(args: argparse.Namespace) -> int:
    from dfguard.serving.load import bench_load

    cfg = config_from(args, {})
    out = Path(args.out)
    figures = bench_load(
        _first_test_fake(cfg),
        out,
        Path(args.params),
        model=args.model,
        clients=args.clients,
        seconds=args.seconds,
        with_clip=args.with_clip,
        rss_growth_bound_mb=args.rss_bound_mb,
    ).figures
    print(
        f"{figures['clients']} clients, {figures['wall_s']} s: {figures['requests']} requests, "
        f"{figures['requests_per_s']:.2f}/s, p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms, "
        f"p99 {figures['p99_ms']} ms, errors {figures['errors']} (429: {figures['rate_limited']})"
    )
    print(
        f"store: {figures['stored']} of {figures['prediction_ids']} answered predictions, "
        f"{figures['lost']} lost; RSS {figures['rss_before_mb']} -> {figures['rss_after_mb']} MB "
        f"(growth {figures['rss_growth_mb']} MB, bound {figures['rss_growth_bound_mb']:g} MB)"
    )
    print(f"-> {out / 'load.json'}, {out / 'load.png'}: {'passed' if figures['passed'] else 'FAILED'}")
    return 0 if figures["passed"] else 1


def _bench_loop(args: argparse.Namespace) -> int:
    from dfguard.config import parse_overrides
    from dfguard.loop.bench import DESIGNS, LABEL_COUNTS, bench_loop
    from dfguard.loop.demo import SIMULATED_REVIEWER

    cfg = config_from(args, {})
    print(f"SIMULATED REVIEWER: labels come from the ground truth, stored as {SIMULATED_REVIEWER!r}")
    out = Path(args.out or f"bench/loop-{args.shift}" + ("-video" if args.media == "video" else ""))
    result = bench_loop(
        cfg,
        Path(args.params),
        parse_overrides(args.set),
        out,
        tuple(args.labels or LABEL_COUNTS),
        args.shift,
        tuple(args.designs or DESIGNS),
        media=args.media,
    )
    print(
        f"{'labels':>6} {'design':>8} {'promoted':>8} {'AUC':>6} {'FAKE':>6} {'reals FAKE':>10} "
        f"{'worst person':>12} {'forgetting':>10} {'label->serving s':>16}  failed"
    )
    for row in result["rows"]:
        seen = row["holdout_challenger"] or row["holdout_after"]
        print(
            f"{row['labels']:>6} {row['design']:>8} {row['promoted']!s:>8} {seen['auc']:>6.3f} "
            f"{seen['fakes_called_fake']:>6.3f} {seen['reals_called_fake']:>10.3f} "
            f"{seen['worst_person_reals_fake']:>12.3f} {row['forgetting']:>+10.4f} "
            f"{row['seconds'].get('last_label_to_serving')!s:>16}  {', '.join(row['failed']) or '-'}"
        )
    before = result["rows"][0]["holdout_before"] if result["rows"] else {}
    if before:
        print(
            f"champion before: AUC {before['auc']:.3f}, fakes called FAKE {before['fakes_called_fake']:.3f}"
        )
    print(f"-> {out / 'loop.json'}, {out / 'loop.png'}")
    return 0


def _bench_summary(args: argparse.Namespace) -> int:
    from dfguard.bench.summary import write_summary

    path = write_summary(Path(args.out))
    print(path.read_text(), end="")
    print(f"-> {path}")
    return 0


def add_commands(commands: Commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="target", required=True)
    bench_extract = bench.add_parser(
        "extract", help="face extraction vs a dlib pipeline and the decode floor"
    )
    bench_extract.add_argument("--out", default="bench/extract", help="where results and plots go")
    bench_extract.add_argument("--frames", type=int, default=16, help="frames per video")
    bench_extract.add_argument("--max-videos", type=int, help="limit the number of videos")
    bench_extract.set_defaults(func=_bench_extract)
    bench_serve = bench.add_parser("serve", help="the HTTP service vs the bare Predictor at 1, 8, 32 clients")
    bench_serve.add_argument(
        "--model", default="models/calibrated", help="model folder (default: %(default)s)"
    )
    bench_serve.add_argument("--out", default="bench/serve", help="where results go (default: %(default)s)")
    bench_serve.set_defaults(func=_bench_serve)
    bench_load = bench.add_parser(
        "load", help="N clients for D seconds against the champion's service: errors, store, memory"
    )
    bench_load.add_argument(
        "--clients", type=int, default=32, help="concurrent clients (default: %(default)s)"
    )
    bench_load.add_argument("--seconds", type=float, default=60.0, help="duration (default: %(default)s)")
    bench_load.add_argument(
        "--model", help="model URI or folder (default: serve.model_uri, the registry's champion)"
    )
    bench_load.add_argument(
        "--with-clip", action="store_true", help="upload a short corpus clip too, turn about with the photo"
    )
    bench_load.add_argument(
        "--rss-bound-mb",
        type=float,
        default=256.0,
        help="the most the service's memory may grow over the run (default: %(default)s)",
    )
    bench_load.add_argument("--out", default="bench/load", help="where results go (default: %(default)s)")
    bench_load.set_defaults(func=_bench_load)
    bench_detect = bench.add_parser("detect", help="`dfguard detect` latency on a 10 s clip; models table")
    bench_detect.add_argument(
        "--model", default="models/calibrated", help="model folder (default: %(default)s)"
    )
    bench_detect.add_argument("--out", default="bench/detect", help="where results go (default: %(default)s)")
    bench_detect.add_argument("--frames", type=int, default=16, help="frames sampled (default: %(default)s)")
    bench_detect.add_argument(
        "--trained",
        action="append",
        default=[],
        metavar="MODEL_DIR",
        help="a trained model folder whose test AUC/ECE fill its row of the models table (repeatable)",
    )
    bench_detect.set_defaults(func=_bench_detect)
    bench_loop = bench.add_parser(
        "loop",
        help="the loop on a kind of fake the champion misses, 10-200 labels, per design (needs make run)",
    )
    bench_loop.add_argument(
        "--shift",
        default="reshape",
        choices=("degrade", "reshape", "resynth", "recolour", "morph"),
        help="the stream: a new kind of fake, or the corpus's fakes degraded (default: %(default)s)",
    )
    bench_loop.add_argument(
        "--media",
        default="image",
        choices=("image", "video"),
        help="photos, or clips (resynth only; about an hour on 2 cores) (default: %(default)s)",
    )
    bench_loop.add_argument("--out", default="", help="where results go (default: bench/loop-SHIFT[-video])")
    bench_loop.add_argument("--labels", type=int, nargs="+", help="label counts (default: 10 25 50 100 200)")
    bench_loop.add_argument(
        "--designs", nargs="+", choices=("expert", "finetune"), help="loop.learn designs (default: both)"
    )
    bench_loop.set_defaults(func=_bench_loop)
    bench_summary = bench.add_parser(
        "summary", help="one table of every benchmark's figures (bench/summary.md) and the machine"
    )
    bench_summary.add_argument("--out", default="bench", help="the benchmarks' folder (default: %(default)s)")
    bench_summary.set_defaults(func=_bench_summary)
