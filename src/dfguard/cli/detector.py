"""Commands over one detector: train, combine, calibrate, evaluate, judge files, export."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from dfguard.cli.common import Commands, calibration_text, config_from, interval_text


def _train(args: argparse.Namespace) -> int:
    from dfguard.training.distributed import process_group
    from dfguard.training.run import train_detector

    overrides = {"train.out_dir": args.out, "train.model": args.model, "train.resume": args.resume or None}
    if args.sbi_only:
        overrides["train.use_dataset_fakes"] = False
    cfg = config_from(args, overrides).train
    # Under `torchrun --nproc_per_node N` this is one of N processes training together; alone, no group.
    with process_group(cfg.device) as world:
        result = train_detector(cfg, progress=not args.no_progress)
    if world is not None and not world.main:
        return 0
    print(
        f"model: {result.model_dir} (best epoch {result.best_epoch} of {result.epochs_run}: validation video "
        f"AUC {result.val_video_auc:.4f}, frame AUC {result.val_frame_auc:.4f}) in {result.seconds:.0f} s"
    )
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from dfguard.training.ensemble import build_ensemble

    cfg = config_from(args, {})
    result = build_ensemble(args.member, args.faces or cfg.train.faces_dir, args.out)
    rows = zip(args.member, result.member_val_video_auc, result.mean_member_weight, strict=True)
    members = ", ".join(f"{folder} {auc:.4f} (weight {weight:.2f})" for folder, auc, weight in rows)
    print(
        f"ensemble: {result.model_dir} (validation video AUC {result.val_video_auc:.4f}; members: {members};"
        f" validation BCE {result.val_loss_average:.4f} averaged -> {result.val_loss_gated:.4f} gated)"
    )
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from dfguard.calibration.fusion import DRIFT_FLOOR
    from dfguard.calibration.stage import run_calibrate

    cfg = config_from(args, {"calibrate.model_dir": args.model, "calibrate.out_dir": args.out}).calibrate
    result = run_calibrate(cfg, progress=not args.no_progress)
    c, m = result.calibrator, result.motion
    if m is not None:
        print(
            f"motion fused: logit = {m.appearance_weight:.3f} x detector logit "
            f"{m.drift_weight:+.3f} x log(drift + {DRIFT_FLOOR}) {m.bias:+.3f}"
        )
    print(
        f"calibrated model: {result.model_dir}: temperature {c.temperature:.3f}, "
        f"threshold {c.threshold:.3f}, UNCERTAIN from {c.real_below:.3f} to {c.fake_from:.3f}; "
        f"validation ECE {c.ece_before:.4f} -> {c.ece_after:.4f}"
    )
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dfguard.evaluation.run import run_evaluate

    flags = {"evaluate.model_dir": args.model, "evaluate.split": args.split, "evaluate.out_dir": args.out}
    cfg = config_from(args, flags).evaluate
    metrics = run_evaluate(cfg, progress=not args.no_progress).metrics
    video, frame = metrics["video"], metrics["frame"]
    print(
        f"{cfg.split}: video AUC {video['auc']}, frame AUC {frame['auc']}, video ECE {video['ece']}, "
        f"accuracy {video['accuracy']} at threshold {video['threshold']} -> {cfg.out_dir}/metrics.json"
    )
    print(f"  {interval_text(metrics)}")
    print(f"  {calibration_text(metrics)}")
    for method, values in metrics["by_method"].items():
        print(f"  {method}: video AUC {values['auc']}")
    return 0


def _media_files(target: Path) -> list[Path]:
    """The file itself, or the supported files of a folder, searched recursively; the others are named
    on stderr rather than dropped silently: a file the client meant to check may carry an odd name."""
    from dfguard.media import media_kind

    if not target.is_dir():
        return [target]
    found = sorted(p for p in target.rglob("*") if p.is_file())
    skipped = [p.relative_to(target) for p in found if not media_kind(p)]
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        print(
            f"skipped {len(skipped)} file(s) that are not a supported video or image: {shown}",
            file=sys.stderr,
        )
    return [p for p in found if media_kind(p)]


def _detect(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    target = Path(args.path)
    if not target.exists():
        print(f"error: {target} does not exist", file=sys.stderr)
        return 2
    files = _media_files(target)
    if not files:
        print(f"error: no videos or images under {target}", file=sys.stderr)
        return 2
    if args.server and args.report:
        print("error: --report needs the model here (it draws Grad-CAM): drop --server", file=sys.stderr)
        return 2
    judge = _remote_judge(args.server, args.api_key) if args.server else _local_judge(args.model, args.report)
    results = []
    # Printed lines show a folder's progress; JSON comes at the end, so a bar shows it meanwhile.
    quiet = not (args.json and target.is_dir()) or args.no_progress
    for path in tqdm(files, desc="detect", unit="file", disable=quiet):
        answer = {"file": str(path), **judge(path)}
        results.append(answer)
        if not args.json:
            probability, drift = answer["probability"], answer.get("drift")
            shown = f"{probability:.3f}" if probability is not None else "  -  "
            moved = f"drift {drift:.2f} px" if drift is not None else ""
            print(f"{answer['verdict']:<15} p(fake)={shown}  {path}  {moved}  {answer['reason']}".rstrip())
    if args.json:
        print(json.dumps(results if target.is_dir() else results[0], indent=2))
    if target.is_dir():
        counts = Counter(result["verdict"] for result in results)
        tally = ", ".join(f"{verdict} {count}" for verdict, count in sorted(counts.items()))
        print(f"judged {len(results)} file(s): {tally}", file=sys.stderr)
    return 0


def _local_judge(model: str, report: str | None) -> Callable[[Path], dict]:
    from dfguard.inference.predictor import Predictor
    from dfguard.inference.report import write_report

    predictor = Predictor(model)

    def judge(path: Path) -> dict:
        prediction = predictor.predict(path)
        if report:
            write_report(prediction, predictor, path, Path(report))
        return prediction.to_dict()

    return judge


def _remote_judge(server: str, api_key: str | None) -> Callable[[Path], dict]:
    from dfguard.serving.client import DetectionClient

    return DetectionClient(server, api_key).detect


def _export_onnx(args: argparse.Namespace) -> int:
    from dfguard.export.onnx import export_onnx

    result = export_onnx(args.model, args.out)
    print(
        f"{result.path}: onnxruntime matches PyTorch (max |logit difference| {result.max_abs_logit_diff:.1e})"
    )
    return 0


def add_commands(commands: Commands) -> None:
    train = commands.add_parser("train", help="train a detector on the face dataset")
    train.add_argument("--out", help="model folder (default: train.out_dir)")
    train.add_argument("--model", help="registered model name (default: train.model)")
    train.add_argument("--sbi-only", action="store_true", help="reals + self-blends only, no dataset fakes")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    train.add_argument("--no-progress", action="store_true")
    train.set_defaults(func=_train)

    ensemble = commands.add_parser(
        "ensemble", help="combine trained detectors; the gate is fitted on the validation split"
    )
    ensemble.add_argument(
        "--member", action="append", required=True, metavar="MODEL_DIR", help="a trained model folder (2+)"
    )
    ensemble.add_argument("--out", required=True, help="ensemble model folder to write")
    ensemble.add_argument("--faces", help="face dataset folder (default: train.faces_dir)")
    ensemble.set_defaults(func=_ensemble)

    calibrate = commands.add_parser("calibrate", help="fit temperature, threshold and UNCERTAIN band")
    calibrate.add_argument("--model", help="trained model folder (default: calibrate.model_dir)")
    calibrate.add_argument("--out", help="calibrated model folder (default: calibrate.out_dir)")
    calibrate.add_argument("--no-progress", action="store_true")
    calibrate.set_defaults(func=_calibrate)

    evaluate = commands.add_parser("evaluate", help="metrics of a model on a split of the face dataset")
    evaluate.add_argument("--model", help="model folder (default: evaluate.model_dir)")
    evaluate.add_argument("--split", help="train, val or test (default: evaluate.split)")
    evaluate.add_argument("--out", help="report folder (default: evaluate.out_dir)")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(func=_evaluate)

    detect = commands.add_parser("detect", help="judge a video, an image or a folder of them")
    detect.add_argument("path", help="a video, an image, or a folder (searched recursively)")
    detect.add_argument("--model", default="models/calibrated", help="model folder (default: %(default)s)")
    detect.add_argument("--report", help="write report.json, a timeline and Grad-CAM overlays here")
    detect.add_argument("--json", action="store_true", help="print the full predictions as JSON")
    detect.add_argument("--no-progress", action="store_true", help="no progress bar for a folder's JSON")
    detect.add_argument("--server", help="judge on a running service (dfguard serve) at this URL instead")
    detect.add_argument("--api-key", help="the service's API key (default: $DFGUARD_API_KEY)")
    detect.set_defaults(func=_detect)

    export = commands.add_parser("export", help="export a model").add_subparsers(dest="format", required=True)
    onnx = export.add_parser("onnx", help="ONNX graph, checked against PyTorch with onnxruntime")
    onnx.add_argument("--model", default="models/calibrated", help="model folder (default: %(default)s)")
    onnx.add_argument("--out", default="models/onnx/model.onnx", help="ONNX file (default: %(default)s)")
    onnx.set_defaults(func=_export_onnx)
