"""`dfguard dashboard` (the reviewers' Streamlit app) and `dfguard users` (its local accounts)."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from dfguard.cli.common import Commands, config_from
from dfguard.config import parse_overrides


def _dashboard(args: argparse.Namespace) -> int:
    from dfguard.review.launch import dashboard_server
    from dfguard.servers import run_servers

    flags = {"dashboard.host": args.host, "dashboard.port": args.port, "dashboard.service_url": args.service}
    cfg = config_from(args, flags)
    overrides = {**parse_overrides(args.set), **{k: v for k, v in flags.items() if v is not None}}
    return run_servers([dashboard_server(cfg.dashboard, Path(args.params), overrides)])


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _users_add(args: argparse.Namespace) -> int:
    from dfguard.feedback import open_store
    from dfguard.review.users import add_user

    password = _read_password(args.password_stdin)
    with open_store(config_from(args, {}).feedback) as store:
        user = add_user(store, args.name, args.role, password)
    print(f"user {user.name!r} added as {user.role}")
    return 0


def _users_list(args: argparse.Namespace) -> int:
    from dfguard.feedback import open_store
    from dfguard.review.users import list_users

    with open_store(config_from(args, {}).feedback) as store:
        for user in list_users(store):
            print(f"{user.name}\t{user.role}")
    return 0


def add_commands(commands: Commands) -> None:
    dashboard = commands.add_parser(
        "dashboard", help="the reviewers' dashboard (Streamlit) on localhost:8501"
    )
    dashboard.add_argument("--host", help="address to listen on (default: dashboard.host, 127.0.0.1)")
    dashboard.add_argument("--port", type=int, help="default: dashboard.port (8501)")
    dashboard.add_argument("--service", help="the detection service's URL (default: dashboard.service_url)")
    dashboard.set_defaults(func=_dashboard)

    users = commands.add_parser("users", help="the dashboard's local accounts").add_subparsers(
        dest="action", required=True
    )
    add = users.add_parser("add", help="make an account (asks for its password)")
    add.add_argument("name", help="letters, digits and _ . @ + -")
    add.add_argument("--role", choices=["reviewer", "engineer"], default="reviewer")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    add.set_defaults(func=_users_add)
    users.add_parser("list", help="every account and its role").set_defaults(func=_users_list)
