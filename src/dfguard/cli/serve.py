"""`dfguard serve`: the detection service over HTTP (BentoML)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dfguard.cli.common import Commands, config_from
from dfguard.config import parse_overrides


def _serve(args: argparse.Namespace) -> int:
    from dfguard.servers import run_servers
    from dfguard.serving.launch import service_server

    flags = {
        "serve.host": args.host,
        "serve.port": args.port,
        "serve.workers": args.workers,
        "serve.model_uri": args.model,
    }
    cfg = config_from(args, flags)  # checked here, so a bad setting fails before BentoML starts
    overrides = {**parse_overrides(args.set), **{k: v for k, v in flags.items() if v is not None}}
    return run_servers([service_server(cfg.serve, Path(args.params), overrides)])


def add_commands(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="serve the champion detector over HTTP (BentoML)")
    serve.add_argument("--host", help="address to listen on (default: serve.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="default: serve.port (3000)")
    serve.add_argument("--workers", type=int, help="worker processes (default: serve.workers)")
    serve.add_argument("--model", help="model URI or folder (default: serve.model_uri, the champion)")
    serve.set_defaults(func=_serve)
