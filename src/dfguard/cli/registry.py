"""The model registry's commands (list, show, promote, rollback) and the team servers."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from dfguard.cli.common import Commands, config_from
from dfguard.config import Config

if TYPE_CHECKING:
    from mlflow import MlflowClient


def _registry_client(args: argparse.Namespace) -> tuple[Config, MlflowClient]:
    from dfguard.registry import configure

    cfg = config_from(args, {})
    return cfg, configure(cfg.registry)


def _models_list(args: argparse.Namespace) -> int:
    from dfguard.registry import version_summaries

    _, client = _registry_client(args)
    summaries = version_summaries(client)
    if not summaries:
        print("no registered versions")
        return 0
    print(f"{'version':>7}  {'aliases':<30} {'created (UTC)':<16}  {'video AUC':>9}  {'ECE':>6}  gate   run")
    for row in summaries:
        print(
            f"{row.version:>7}  {','.join(row.aliases) or '-':<30} {row.created:%Y-%m-%d %H:%M}  "
            f"{row.video_auc:>9.4f}  {row.video_ece:>6.4f}  {row.gate:<5}  {row.run_id}"
        )
    return 0


def _models_show(args: argparse.Namespace) -> int:
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


def _models_promote(args: argparse.Namespace) -> int:
    from dfguard.promotion import loadable, promote

    cfg, client = _registry_client(args)
    result = promote(
        client,
        args.version,
        cfg.promotion,
        force=args.force,
        verify=loadable(client),
        experiment=cfg.registry.experiment,
    )
    print(f"gate for version {result.version}: {'passed' if result.gate.passed else 'failed'}")
    for reason in result.gate.reasons:
        print(f"  {reason}")
    if not result.promoted:
        print("not promoted (--force promotes past a failing gate)")
        return 1
    print(f"promoted; aliases: {json.dumps(result.aliases, sort_keys=True)}")
    return 0


def _models_rollback(args: argparse.Namespace) -> int:
    from dfguard.promotion import loadable, rollback

    _, client = _registry_client(args)
    aliases = rollback(client, verify=loadable(client))
    print(f"rolled back; aliases: {json.dumps(aliases, sort_keys=True)}")
    return 0


def _server_start(args: argparse.Namespace) -> int:
    from dfguard.servers import project_servers, run_servers

    cfg = config_from(args, {}).registry
    return run_servers(project_servers(cfg, args.host, args.mlflow_port, args.prefect_port))


def add_commands(commands: Commands) -> None:
    models = commands.add_parser("models", help="registered detectors").add_subparsers(
        dest="action", required=True
    )
    models.add_parser("list", help="every registered version, newest first").set_defaults(func=_models_list)
    show = models.add_parser("show", help="one version: aliases, lineage, gate verdict, metrics")
    show.add_argument("version", help="version number or alias (champion, challenger, previous)")
    show.set_defaults(func=_models_show)
    promote = models.add_parser("promote", help="gate a version against the champion; promote it on a pass")
    promote.add_argument("version", help="version number or alias")
    promote.add_argument("--force", action="store_true", help="promote even if the gate fails")
    promote.set_defaults(func=_models_promote)
    models.add_parser("rollback", help="make the previous champion the champion again").set_defaults(
        func=_models_rollback
    )

    server = commands.add_parser("server", help="the team servers").add_subparsers(
        dest="action", required=True
    )
    server_start = server.add_parser("start", help="MLflow (tracking, registry, UI) and Prefect servers")
    server_start.add_argument("--host", default="127.0.0.1", help="where both listen (default: %(default)s)")
    server_start.add_argument("--mlflow-port", type=int, default=5000, help="default: %(default)s")
    server_start.add_argument("--prefect-port", type=int, default=4200, help="default: %(default)s")
    server_start.set_defaults(func=_server_start)
