"""`dfguard run` (the main job), `dfguard pipeline`, `dfguard loop` and `dfguard flows`: the commands
that run the Prefect flows. They plug into the CLI through the `dfguard.commands` entry point, so the
library never imports the flows; prefect itself is imported only when one of them runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dfguard.cli.common import Commands, calibration_text, config_from, interval_text
from dfguard.config import Config
from dfguard.metrics import METRICS_NAME


def _run(args: argparse.Namespace) -> int:
    """The main job on the embedded defaults: raw data -> DVC-tracked stages -> default remote, then a
    verdict on a held-out clip."""
    from dfguard.corpus.sources import fetch_sources
    from dfguard.versioning import track_raw_data

    cfg = config_from(args, {})
    index = fetch_sources(Path(cfg.corpus.sources_dir))
    for skipped in index["skipped"]:
        print(f"source skipped: {skipped['source']}: {skipped['reason']}")
    track_raw_data()
    result = _run_pipeline(args)
    _say_if_outputs_differ(cfg)
    for title, summary_path in (
        ("Manifest", Path(cfg.ingest.out_dir) / "summary.json"),
        ("Face dataset", Path(cfg.extract.out_dir) / "summary.json"),
    ):
        print(f"\n{title} summary ({summary_path}):")
        print(summary_path.read_text())
    print(f"Contact sheet: {Path(cfg.corpus.out_dir) / 'contact_sheet.jpg'}")
    _print_evaluation(Path(cfg.evaluate.out_dir) / METRICS_NAME)
    _detect_held_out_clip(cfg)
    _print_pipeline(result, cfg)
    return 0


def _say_if_outputs_differ(cfg: Config) -> None:
    """The committed figures (docs/results.md) were measured on the committed corpus and face dataset:
    say so plainly when this machine made others, which re-trained the model."""
    from dfguard.versioning import committed_output_hash, output_hash

    for name, path in (("demo corpus", cfg.corpus.out_dir), ("face dataset", cfg.extract.out_dir)):
        committed, made = committed_output_hash(path), output_hash(path)
        if committed and made and committed != made:
            print(
                f"NOTE: this machine made a different {name} ({made}) than the committed one ({committed}): "
                "the stages after it re-ran, and the figures differ from docs/results.md (see "
                "docs/corpus.md#reproducibility)."
            )
            return


def _run_pipeline(args: argparse.Namespace) -> dict:
    from pipelines.pipeline import pipeline_flow

    return pipeline_flow(params_path=args.params)


def _pipeline_run(args: argparse.Namespace) -> int:
    _print_pipeline(_run_pipeline(args), config_from(args, {}))
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


def _print_evaluation(metrics_path: Path) -> None:
    metrics = json.loads(metrics_path.read_text())
    video = metrics["video"]
    methods = ", ".join(f"{m} {v['auc']:.3f}" for m, v in metrics["by_method"].items())
    print(
        f"\nTest split ({metrics_path}): video AUC {video['auc']:.3f} ({methods}), frame AUC "
        f"{metrics['frame']['auc']:.3f}, ECE {video['ece']:.3f}, accuracy {video['accuracy']:.3f}"
    )
    print(interval_text(metrics))
    print(calibration_text(metrics))


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
    predictor = Predictor(cfg.evaluate.model_dir)
    prediction = predictor.predict(clip)
    folder = write_report(prediction, predictor, clip, Path("reports/detect"))
    print(
        f"\ndfguard detect {clip} ({held_out['method'].iloc[0]}, held out): {prediction.verdict}, "
        f"p(fake) {prediction.probability} -> report in {folder}"
    )


def _flows_serve(args: argparse.Namespace) -> int:
    from pipelines.deployments import serve_flows

    serve_flows(config_from(args, {}).flows, args.params)
    return 0


def _loop_run(args: argparse.Namespace) -> int:
    from pipelines.loop import loop_flow

    result = loop_flow(action=args.decide or "", params_path=args.params)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif "refused" in result:
        print(result["refused"])
    else:
        print(f"decision: {result['decision']['action']}")
        for line in result["decision"]["reasons"]:
            print(f"  {line}")
        for check in result["checks"]:
            print(f"  {'pass' if check['passed'] else 'fail'}: {check['reason']}")
        if result["challenger"]:
            verdict = "promoted to champion" if result["promoted"] else "not promoted"
            print(f"challenger version {result['challenger']}: {verdict}")
    return 1 if "refused" in result else 0


def _loop_demo(args: argparse.Namespace) -> int:
    from dfguard.config import parse_overrides
    from dfguard.loop.demo import SIMULATED_REVIEWER, run_demo

    cfg = config_from(args, {})
    print(f"SIMULATED REVIEWER: labels come from the ground truth, stored as {SIMULATED_REVIEWER!r}")
    figures = run_demo(
        cfg,
        Path(args.params),
        parse_overrides(args.set),
        Path(args.out),
        args.labels,
        args.server or "",
        args.api_key,
        action=args.decide,
    )
    print(f"\ndecision: {figures['decision']['action']} ({'; '.join(figures['decision']['reasons'])})")
    for check in figures["checks"]:
        print(f"  {'pass' if check['passed'] else 'fail'}: {check['reason']}")
    verdict = "promoted" if figures["promoted"] else "not promoted"
    print(f"challenger {figures['challenger']}: {verdict}; served now: version {figures['served_after']}")
    print("\nshifted holdout (people never trained on, never labelled), as the service judged it:")
    print(f"  {'':8} {'AUC':>6} {'accuracy':>9} {'fakes FAKE':>11} {'reals REAL':>11} {'UNCERTAIN':>10}")
    for when in ("before", "after"):
        f = figures["holdout"][when]
        print(
            f"  {when:8} {f['auc']:6.3f} {f['accuracy']:9.3f} {f['fakes_called_fake']:11.3f} "
            f"{f['reals_called_real']:11.3f} {f['uncertain']:10.3f}"
        )
    frozen = figures["frozen_suite"]
    if frozen:
        print(
            f"frozen test suite video AUC: champion {frozen['champion']['auc']:.4f} -> challenger "
            f"{frozen['challenger']['auc']:.4f}"
        )
    print(f"seconds: {figures['seconds']} -> {Path(args.out) / 'demo.json'}")
    return 0


def add_commands(commands: Commands) -> None:
    run = commands.add_parser("run", help="the main job: fetch sources, run the pipeline flow")
    run.set_defaults(func=_run)
    pipeline = commands.add_parser("pipeline", help="the Prefect pipeline").add_subparsers(
        dest="action", required=True
    )
    pipeline.add_parser(
        "run", help="extract -> train -> calibrate -> evaluate -> register -> promote, then push"
    ).set_defaults(func=_pipeline_run)
    flows = commands.add_parser("flows", help="Prefect deployments").add_subparsers(
        dest="action", required=True
    )
    flows.add_parser(
        "serve", help="serve the flows on their schedules (needs `dfguard server start` running)"
    ).set_defaults(func=_flows_serve)
    loop = commands.add_parser("loop", help="the continual-learning loop").add_subparsers(
        dest="action", required=True
    )
    loop_run = loop.add_parser("run", help="one loop run: drift, gate, fine-tune or re-calibrate, promotion")
    loop_run.add_argument(
        "--decide", choices=["wait", "recalibrate", "finetune"], help="override the loop gate's decision"
    )
    loop_run.add_argument("--json", action="store_true", help="print the whole result as JSON")
    loop_run.set_defaults(func=_loop_run)
    demo = loop.add_parser(
        "demo", help="a shifted stream through the service, a SIMULATED reviewer's labels, one loop run"
    )
    demo.add_argument("--labels", type=int, default=100, help="clips the simulated reviewer labels")
    demo.add_argument("--out", default="build/loop-demo", help="stream, service log, demo.json")
    demo.add_argument("--server", help="a running service to use (default: start one on a free port)")
    demo.add_argument("--api-key", help="the service's API key (default: $DFGUARD_API_KEY)")
    demo.add_argument(
        "--decide", choices=["wait", "recalibrate", "finetune"], help="override the loop gate's decision"
    )
    demo.set_defaults(func=_loop_demo)
