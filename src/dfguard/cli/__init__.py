"""`dfguard`: the engineers' command line. Each command is a thin shell over a plain function; each
module of this package owns one group of commands and adds its own parsers. Groups outside the library
(the flows' commands, `pipelines.commands`) plug in through the `dfguard.commands` entry point, so the
library does not depend on them."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from importlib.metadata import entry_points

from dfguard.cli import bench, data, detector, feedback, keys, registry, review, serve, studies, up
from dfguard.config import PARAMS_FILE

log = logging.getLogger("dfguard")
# What `--help` says; the docstring above is for whoever maintains the package.
DESCRIPTION = "dfguard: the engineers' command line for the deepfake detectors, their data and registry."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfguard", description=DESCRIPTION)
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one setting"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    groups = [entry.load() for entry in entry_points(group="dfguard.commands")]
    groups += [
        module.add_commands
        for module in (data, detector, studies, bench, registry, serve, keys, feedback, review, up)
    ]
    for add_commands in groups:
        add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dfguard.runtime import configure_runtime

    args = build_parser().parse_args(argv)
    configure_runtime(logging.DEBUG if args.verbose else logging.INFO)
    try:
        code = args.func(args)
        # Flushed here, so that a reader that stopped early (`dfguard models list | head -1`) is handled
        # below instead of as "Exception ignored" when the interpreter exits.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Nobody reads what is left: send it nowhere, and exit as a process stopped by SIGPIPE would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        log.debug("failed", exc_info=True)
        print(f"dfguard: error: {err}", file=sys.stderr)
        return 2
