"""Cross-validated studies over people: k-fold cross-validation and the learning curve."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dfguard.cli.common import Commands, calibration_text, config_from, interval_text
from dfguard.config import Config


def _study_config(args: argparse.Namespace) -> Config:
    """The configuration of a cross-validated study: `--model` and `--sbi-only` set train's."""
    overrides: dict[str, object] = {"train.model": args.model}
    if args.sbi_only:
        overrides["train.use_dataset_fakes"] = False
    return config_from(args, overrides)


def _log_crossval(cfg: Config, out_dir: Path, metrics: dict[str, Any]) -> str:
    """The cross-validation as an MLflow run beside the model runs: settings, pooled metrics, plots."""
    from dfguard.registry.runs import log_study_run
    from dfguard.registry.store import configure

    figures = {key: value for key, value in metrics.items() if key not in ("train", "per_fold")}
    per_fold = {f"fold_{f['fold']}": {"test_video_auc": f["test_video_auc"]} for f in metrics["per_fold"]}
    return log_study_run(
        configure(cfg.registry),
        "crossval",
        params={k: metrics[k] for k in ("folds", "seed", "train_share", "train")},
        metrics={**figures, **per_fold},
        files=[out_dir / name for name in ("crossval.json", "roc.png", "identities.png")],
        experiment=cfg.registry.experiment,
        run_name=f"crossval {metrics['model']} {metrics['folds']} folds",
    )


def _crossval(args: argparse.Namespace) -> int:
    from dfguard.studies.crossval import run_crossval

    cfg = _study_config(args)
    result = run_crossval(
        cfg, args.folds, args.out, args.seed, progress=not args.no_progress, train_share=args.train_share
    )
    metrics = result.metrics
    run_id = _log_crossval(cfg, result.out_dir, metrics)
    video = metrics["video"]
    methods = ", ".join(f"{m} {v['auc']}" for m, v in metrics["by_method"].items())
    print(
        f"{metrics['folds']}-fold cross-validation of {metrics['model']} over {metrics['people']} people "
        f"({metrics['videos']} videos): pooled video AUC {video['auc']} ({methods}), ECE {video['ece']}, "
        f"accuracy {video['accuracy']} at each fold's threshold; "
        f"per fold {metrics['fold_auc_mean']:.3f} +- {metrics['fold_auc_std']:.3f}; "
        f"within-person AUC {metrics['within_identity_auc']} -> {args.out}/crossval.json"
    )
    if metrics["train_share"] < 1:
        trained_on = ", ".join(str(f["train_people"]) for f in metrics["per_fold"])
        print(f"  each fold trained on {metrics['train_share']:.0%} of its training people ({trained_on})")
    print(f"  {interval_text(metrics)}")
    print(f"  {calibration_text(metrics)}")
    print(f"  MLflow run {run_id} (experiment {cfg.registry.experiment})")
    return 0


def _learning_curve(args: argparse.Namespace) -> int:
    from dfguard.studies.learning_curve import PLOT_NAME, run_learning_curve

    cfg = _study_config(args)
    result = run_learning_curve(
        cfg, args.shares, args.folds, args.out, args.seed, progress=not args.no_progress
    )
    print(f"learning curve of {cfg.train.model} ({args.folds}-fold cross-validation per point):")
    for point in result.points:
        methods = ", ".join(f"{m} {auc:.3f}" for m, auc in point["auc_by_method"].items())
        interval = (
            f" ({point['video_auc_low']:.3f}-{point['video_auc_high']:.3f})" if point["video_auc_low"] else ""
        )
        print(
            f"  {point['train_people_mean']:5.1f} people ({point['train_share']:.0%}): video AUC "
            f"{point['video_auc']:.3f}{interval}, {methods}; within-person {point['within_identity_auc']}"
        )
    print(f"  -> {result.out_dir / PLOT_NAME}")
    return 0


def _clip_layers(args: argparse.Namespace) -> int:
    from dfguard.studies.clip_layers import PLOT_NAME, run_clip_layer_study

    cfg = config_from(args, {})
    result = run_clip_layer_study(
        cfg.train.faces_dir,
        cfg.train.manifest_path,
        args.out,
        split=args.split,
        per_video=args.per_video,
        folds=args.folds,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(
        f"CLIP features on the {result['split']} split ({result['videos']} videos, {result['faces']} faces, "
        f"{result['folds']} folds over people): held-out video AUC of a logistic regression"
    )
    for name, auc in result["video_auc"].items():
        print(f"  {auc:.3f}  {name}")
    print(f"  -> {Path(args.out) / PLOT_NAME}")
    return 0


def _add_study_flags(parser: argparse.ArgumentParser, out: str) -> None:
    parser.add_argument("--folds", type=int, default=5, help="groups of people (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="shuffles people into folds (default: 0)")
    parser.add_argument("--out", default=out, help="where results go (default: %(default)s)")
    parser.add_argument("--model", help="registered model name (default: train.model)")
    parser.add_argument("--sbi-only", action="store_true", help="reals + self-blends only, no dataset fakes")
    parser.add_argument("--no-progress", action="store_true")


def add_commands(commands: Commands) -> None:
    crossval = commands.add_parser(
        "crossval", help="k-fold cross-validation over people: train, calibrate, evaluate each fold"
    )
    _add_study_flags(crossval, "reports/crossval")
    crossval.add_argument(
        "--train-share",
        type=float,
        default=1.0,
        help="train each fold on this share of its training people, for a learning curve (default: 1)",
    )
    crossval.set_defaults(func=_crossval)

    curve = commands.add_parser(
        "learning-curve", help="cross-validated AUC against the number of people trained on"
    )
    _add_study_flags(curve, "reports/learning-curve")
    curve.add_argument(
        "--shares",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 1.0],
        help="shares of each fold's training people, one cross-validation each (default: %(default)s)",
    )
    curve.set_defaults(func=_learning_curve)

    layers = commands.add_parser(
        "clip-layers", help="which CLIP blocks' features tell fakes apart, cross-validated over people"
    )
    layers.add_argument("--split", default="train", help="whose people (default: %(default)s)")
    layers.add_argument("--per-video", type=int, default=6, help="faces per video (default: %(default)s)")
    layers.add_argument("--folds", type=int, default=5, help="groups of people (default: %(default)s)")
    layers.add_argument("--seed", type=int, default=0, help="shuffles people into folds (default: 0)")
    layers.add_argument(
        "--out", default="reports/clip-layers", help="where results go (default: %(default)s)"
    )
    layers.add_argument("--no-progress", action="store_true")
    layers.set_defaults(func=_clip_layers)
