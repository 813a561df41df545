"""The `loop` flow: one run of the continual-learning loop (`dfguard.loop.run`): feedback dataset, drift
report, gate, fine-tune or re-calibration, promotion. A run already in progress makes a second one end
at once with the reason (the loop's lock), not wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from dfguard.config import PARAMS_FILE, load_config
from dfguard.feedback import open_store
from dfguard.loop.run import LoopBusyError, run_loop
from dfguard.models.features import use_store_if_made
from dfguard.registry import configure
from dfguard.versioning import commit_stage


@flow(name="loop", log_prints=True)
def loop_flow(action: str = "", params_path: str = str(PARAMS_FILE)) -> dict[str, Any]:
    """`action` "" lets the loop gate decide; wait, recalibrate or finetune overrides it."""
    logger = get_run_logger()
    cfg = load_config(Path(params_path))
    use_store_if_made(cfg.embed.out_dir)  # frozen-backbone models score cached crops
    try:
        with open_store(cfg.feedback) as store:
            result = run_loop(
                cfg, store, configure(cfg.registry), action or None, str(flow_run.get_id() or "")
            )
    except LoopBusyError as busy:
        logger.warning("%s", busy)
        return {"refused": str(busy)}
    if not Path(cfg.loop.dataset_dir).is_absolute():
        # Inside the project (the default): dvc.lock records the feedback dataset version exported.
        commit_stage("feedback")
    for line in (*result.decision.reasons, *(check.line for check in result.checks)):
        logger.info("%s", line)
    verdict = "promoted" if result.promoted else "not promoted"
    logger.info("loop %s: challenger %s, %s", result.decision.action, result.challenger, verdict)
    return result.to_dict()
