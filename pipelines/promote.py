"""The `promote` flow: the promotion gate, then the alias switch, all or nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from dfguard.config import PARAMS_FILE, load_config
from dfguard.promotion import loadable, promote
from dfguard.registry import configure


@flow(name="promote", log_prints=True)
def promote_flow(
    version: str = "challenger", force: bool = False, params_path: str = str(PARAMS_FILE)
) -> dict[str, Any]:
    """Gate `version` (a number or an alias) against the champion; on a pass it becomes the champion."""
    logger = get_run_logger()
    cfg = load_config(Path(params_path))
    client = configure(cfg.registry)
    result = promote(
        client,
        version,
        cfg.promotion,
        force=force,
        verify=loadable(client),
        experiment=cfg.registry.experiment,
    )
    for reason in result.gate.reasons:
        logger.info("gate: %s", reason)
    logger.info(
        "version %s %s; aliases %s",
        result.version,
        "promoted" if result.promoted else "not promoted",
        result.aliases,
    )
    return {
        "version": result.version,
        "promoted": result.promoted,
        "reasons": list(result.gate.reasons),
        "aliases": result.aliases,
    }
