"""The detector's aliases and all-or-nothing changes to them.

Registry stages are deprecated: aliases name the roles. `challenger` is the newest registered version
waiting for the gate, `champion` the one served, `previous` the champion before it (what a rollback
returns to).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dfguard.registry.store import MODEL_NAME

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"
# What serving and evaluation load by default: whichever version is the champion when they load.
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"
# A tag of the registered model, set while an alias transaction runs: the aliases as they were before
# it. Found set later, it means the process died half-way (`recover_interrupted` puts them back).
PENDING_TAG = "aliases.pending"


def current_aliases(client: MlflowClient) -> dict[str, str]:
    """Alias -> version number, for every alias of the detector (empty before the first registration)."""
    try:
        model = client.get_registered_model(MODEL_NAME)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(version) for alias, version in model.aliases.items()}


def move_alias(client: MlflowClient, alias: str, version: str | None) -> None:
    """Point `alias` at `version`, or remove it when `version` is None."""
    if version is None:
        client.delete_registered_model_alias(MODEL_NAME, alias)
    else:
        client.set_registered_model_alias(MODEL_NAME, alias, version)


@contextmanager
def alias_transaction(client: MlflowClient) -> Iterator[None]:
    """Aliases as they are on entry are put back if the block raises, so a change of roles that fails
    half-way (the store going away, a verification failing) leaves no version half-promoted.

    MLflow has no multi-alias transaction; this is compensation, which assumes no one else moves the
    detector's aliases at the same moment. The aliases on entry are also written to the registry
    (`PENDING_TAG`) until the block ends, so that a process killed inside it, which runs no clean-up,
    leaves them for `recover_interrupted` to put back.
    """
    before = current_aliases(client)
    client.set_registered_model_tag(MODEL_NAME, PENDING_TAG, json.dumps(before, sort_keys=True))
    try:
        yield
    except BaseException:
        restore_aliases(client, before)
        client.delete_registered_model_tag(MODEL_NAME, PENDING_TAG)
        raise
    client.delete_registered_model_tag(MODEL_NAME, PENDING_TAG)


def recover_interrupted(client: MlflowClient) -> dict[str, str] | None:
    """Put the aliases back as they were before an alias transaction that never ended (its process
    was killed); returns them, or None when no transaction was left open. Called before every change
    of roles, so the next promotion or rollback starts from consistent aliases."""
    try:
        pending = client.get_registered_model(MODEL_NAME).tags.get(PENDING_TAG)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    if pending is None:
        return None
    before = json.loads(pending)
    log.warning("an alias change was interrupted (its process died): putting the aliases back to %s", before)
    restore_aliases(client, before)
    client.delete_registered_model_tag(MODEL_NAME, PENDING_TAG)
    return before


def restore_aliases(client: MlflowClient, before: dict[str, str]) -> None:
    """Point every alias back where `before` (from `current_aliases`) had it."""
    now = current_aliases(client)
    for alias in sorted(set(before) | set(now)):
        if before.get(alias) != now.get(alias):
            log.warning("restoring alias %s -> %s", alias, before.get(alias, "(none)"))
            move_alias(client, alias, before.get(alias))
