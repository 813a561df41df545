"""The prediction store's commands: what it holds, retention, and the feedback dataset it exports."""

from __future__ import annotations

import argparse

from dfguard.cli.common import Commands, config_from


def _stats(args: argparse.Namespace) -> int:
    from dfguard.feedback import open_store

    with open_store(config_from(args, {}).feedback) as store:
        summary = store.summary()
    print(f"store: {summary.url} (schema version {summary.schema_version})")
    span = f", {summary.first:%Y-%m-%d %H:%M} to {summary.last:%Y-%m-%d %H:%M} UTC" if summary.first else ""
    print(f"predictions: {summary.predictions}{span}")
    print(f"labelled: {summary.labelled} predictions ({summary.labels} labels)")
    for title, counts in (("verdict", summary.by_verdict), ("model version", summary.by_model_version)):
        print(f"by {title}:")
        for key, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            print(f"  {key or '(local folder)':<16} {n:>8}")
    return 0


def _purge(args: argparse.Namespace) -> int:
    from dfguard.feedback import open_store

    cfg = config_from(args, {"feedback.retention_days": args.days}).feedback
    with open_store(cfg) as store:
        result = store.purge(cfg.retention_days)
    print(
        f"purged {result.predictions} unlabelled predictions made before {result.cutoff:%Y-%m-%d %H:%M} UTC; "
        f"deleted {result.crop_files} crop and {result.upload_files} upload files "
        f"({result.bytes_freed / 1e6:.1f} MB)"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    from dfguard.faces.table import read_contract
    from dfguard.feedback import open_store
    from dfguard.loop.dataset import export_feedback

    cfg = config_from(args, {"loop.dataset_dir": args.out})
    # The served models were trained on the face dataset's crops: the feedback is cropped alike.
    contract = read_contract(cfg.train.faces_dir)
    with open_store(cfg.feedback) as store:
        summary = export_feedback(store, cfg.loop.dataset_dir, contract, cfg.loop.holdout_share)
    print(
        f"{summary.items} labelled items ({summary.faces} faces) -> {summary.out_dir}: by split "
        f"{summary.by_split}, by label {summary.by_label}; left out: {summary.unsure} unsure, "
        f"{summary.disagreements} where reviewers disagree, {summary.no_crops} without crops"
    )
    return 0


def add_commands(commands: Commands) -> None:
    feedback = commands.add_parser("feedback", help="the prediction store").add_subparsers(
        dest="action", required=True
    )
    feedback.add_parser(
        "stats", help="predictions by verdict and model version, labels, the database"
    ).set_defaults(func=_stats)
    purge = feedback.add_parser("purge", help="delete unlabelled predictions past retention, and their files")
    purge.add_argument(
        "--days", type=int, help="delete those older than this many days (default: feedback.retention_days)"
    )
    purge.set_defaults(func=_purge)
    export = feedback.add_parser("export", help="labelled predictions -> the feedback face dataset (loop)")
    export.add_argument("--out", help="output folder (default: loop.dataset_dir)")
    export.set_defaults(func=_export)
