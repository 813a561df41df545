"""The `train` flow: DVC stages train -> calibrate -> evaluate (only what changed re-runs), then the
calibrated model is logged to MLflow with its lineage and registered as the `challenger`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from dfguard.config import PARAMS_FILE, Config, load_config
from dfguard.metrics import METRICS_NAME
from dfguard.registry import configure, register_challenger
from dfguard.versioning import reproduce


@task(name="dvc-train-calibrate-evaluate")
def run_model_stages() -> None:
    reproduce("evaluate")


@task(name="register-challenger")
def register_task(cfg: Config, flow_run_id: str) -> dict[str, Any]:
    return dataclasses.asdict(register_challenger(configure(cfg.registry), cfg, flow_run_id))


@flow(name="train", log_prints=True)
def train_flow(params_path: str = str(PARAMS_FILE)) -> dict[str, Any]:
    """Train, calibrate and evaluate through DVC, then register the result as the challenger."""
    logger = get_run_logger()
    run_model_stages()
    cfg = load_config(Path(params_path))
    registered = register_task(cfg, str(flow_run.get_id() or ""))
    metrics = json.loads((Path(cfg.evaluate.out_dir) / METRICS_NAME).read_text())
    logger.info(
        "model version %s (%s): test video AUC %s, ECE %s",
        registered["version"],
        "new challenger" if registered["registered"] else "already registered",
        metrics["video"]["auc"],
        metrics["video"]["ece"],
    )
    return {
        **registered,
        "test_video_auc": metrics["video"]["auc"],
        "test_video_ece": metrics["video"]["ece"],
    }
