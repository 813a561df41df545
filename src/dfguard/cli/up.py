"""`dfguard up`: the whole platform on this host in one command, stopped together by Ctrl-C.

In order, each waited for before the next: the MLflow UI on the embedded store (unless
`registry.tracking_uri` names a team's server), the Prefect server, the flows' deployments served to it
(`dfguard flows serve`: the nightly pipeline, the loop after labels and on demand), the detection
service, and the reviewers' dashboard pointed at that service and that Prefect server (its "Run the
loop now" queues the loop's deployment there). One `up` per project folder: a second one says which
process runs the first.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from dfguard.cli.common import Commands, config_from
from dfguard.config import parse_overrides
from dfguard.review.launch import dashboard_server
from dfguard.servers import (
    AlreadyRunningError,
    Server,
    mlflow_server,
    prefect_server,
    run_servers,
    single_instance,
)
from dfguard.serving.launch import service_server

UP_LOCK = Path("build/up.lock")  # beside the project's other local state; the kernel frees it on exit


def platform_servers(args: argparse.Namespace) -> list[Server]:
    """The processes of `dfguard up`, in the order they start."""
    overrides: dict[str, object] = {"serve.host": args.host, "dashboard.host": args.host}
    if args.service_port:
        overrides["serve.port"] = args.service_port
    if args.dashboard_port:
        overrides["dashboard.port"] = args.dashboard_port
    cfg = config_from(args, overrides)  # checked here, so a bad setting fails before anything starts
    overrides = {**parse_overrides(args.set), **overrides}
    prefect = prefect_server(args.host, args.prefect_port)
    prefect_env = {"PREFECT_API_URL": f"{prefect.url}/api"}
    dfguard = [sys.executable, "-m", "dfguard.cli", "--params", args.params]
    for pair in args.set:
        dfguard += ["--set", pair]
    flows = Server(
        "Prefect deployments", [*dfguard, "flows", "serve"], f"{prefect.url}/deployments", prefect_env
    )
    service = service_server(cfg.serve, Path(args.params), overrides)
    dashboard = dashboard_server(
        cfg.dashboard, Path(args.params), {**overrides, "dashboard.service_url": service.url}
    )
    dashboard = dataclasses.replace(dashboard, env={**dashboard.env, **prefect_env})
    mlflow = [] if cfg.registry.tracking_uri else [mlflow_server(cfg.registry, args.host, args.mlflow_port)]
    return [*mlflow, prefect, flows, service, dashboard]


def _up(args: argparse.Namespace) -> int:
    servers = platform_servers(args)
    try:
        with single_instance(UP_LOCK, "dfguard up"):
            return run_servers(servers)
    except AlreadyRunningError as err:
        print(f"dfguard: {err}: its URLs are in its own terminal; stop it with Ctrl-C there", file=sys.stderr)
        return 2


def add_commands(commands: Commands) -> None:
    up = commands.add_parser(
        "up", help="the whole platform here: MLflow UI, Prefect server + deployments, service, dashboard"
    )
    up.add_argument("--host", default="127.0.0.1", help="where all of them listen (default: %(default)s)")
    up.add_argument("--mlflow-port", type=int, default=5000, help="default: %(default)s")
    up.add_argument("--prefect-port", type=int, default=4200, help="default: %(default)s")
    up.add_argument("--service-port", type=int, help="default: serve.port")
    up.add_argument("--dashboard-port", type=int, help="default: dashboard.port")
    up.set_defaults(func=_up)
