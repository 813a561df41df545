"""`dfguard keys`: the service's API keys (their secrets are shown once; the file keeps digests)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dfguard.cli.common import Commands, config_from

DEFAULT_KEYS_FILE = "data/service/api_keys"


def _keys_file(args: argparse.Namespace) -> Path:
    return Path(args.file or config_from(args, {}).serve.keys_file or DEFAULT_KEYS_FILE)


def _add(args: argparse.Namespace) -> int:
    from dfguard.serving.security import add_key

    path = _keys_file(args)
    secret = add_key(path, args.id)
    print(f"key {args.id!r} added to {path}; its secret (shown only now):\n{secret}")
    if not config_from(args, {}).serve.keys_file:
        print(f"serve with it: dfguard --set serve.keys_file={path} serve")
    return 0


def _list(args: argparse.Namespace) -> int:
    from dfguard.serving.security import load_keys

    path = _keys_file(args)
    for key_id in load_keys(path if path.is_file() else "", env={}).ids:
        print(key_id)
    return 0


def add_commands(commands: Commands) -> None:
    keys = commands.add_parser("keys", help="the detection service's API keys").add_subparsers(
        dest="action", required=True
    )
    add = keys.add_parser("add", help="make a key: prints its secret once, stores its SHA-256")
    add.add_argument("id", help="a name for the key's holder (letters, digits, _ . -)")
    add.add_argument("--file", help=f"keys file (default: serve.keys_file, else {DEFAULT_KEYS_FILE})")
    add.set_defaults(func=_add)
    listing = keys.add_parser("list", help="the ids of the keys in the keys file")
    listing.add_argument("--file", help="keys file (default: as for add)")
    listing.set_defaults(func=_list)
