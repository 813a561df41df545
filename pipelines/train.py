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
from dfguard.registry import (
    MODEL_NAME,
    collect_lineage,
    configure,
    list_versions,
    log_model_run,
    model_digest,
    register,
)
from dfguard.versioning import reproduce

MODEL_DIGEST_TAG = "dfguard.model_sha256"


@task(name="dvc-train-calibrate-evaluate")
def run_model_stages() -> None:
    reproduce("evaluate")


@task(name="register-challenger")
def register_challenger(cfg: Config, flow_run_id: str, parent_run_id: str = "") -> dict[str, Any]:
    """Log and register the calibrated model, unless that exact model is registered already (a re-run
    with nothing changed must not pile up identical versions)."""
    client = configure(cfg.registry)
    model_dir = Path(cfg.calibrate.out_dir)
    digest = model_digest(model_dir)
    for version in list_versions(client):
        if version.tags.get(MODEL_DIGEST_TAG) == digest:
            return {"version": str(version.version), "registered": False, "run_id": version.run_id}
    metrics = json.loads((Path(cfg.evaluate.out_dir) / "metrics.json").read_text())
    training = json.loads((model_dir / "config.json").read_text()).get("training", {})
    lineage = collect_lineage(
        model_dir, cfg.train.faces_dir, parent_run_id=parent_run_id, flow_run_id=flow_run_id
    )
    run_id = log_model_run(
        client,
        model_dir,
        params={"train": dataclasses.asdict(cfg.train), "extract": dataclasses.asdict(cfg.extract)},
        resolved_config=dataclasses.asdict(cfg),
        metrics={**metrics, "training": {k: v for k, v in training.items() if k != "config"}},
        lineage=lineage,
        artifacts={"evaluation": cfg.evaluate.out_dir, "calibration": cfg.calibrate.report_dir},
        experiment=cfg.registry.experiment,
        run_name=f"{training.get('config', {}).get('model', 'model')}-{digest[:8]}",
    )
    version = register(client, run_id, lineage)
    client.set_model_version_tag(MODEL_NAME, version.version, MODEL_DIGEST_TAG, digest)
    return {"version": str(version.version), "registered": True, "run_id": run_id}


@flow(name="train", log_prints=True)
def train_flow(params_path: str = str(PARAMS_FILE)) -> dict[str, Any]:
    """Train, calibrate and evaluate through DVC, then register the result as the challenger."""
    logger = get_run_logger()
    run_model_stages()
    cfg = load_config(Path(params_path))
    registered = register_challenger(cfg, str(flow_run.get_id() or ""))
    metrics = json.loads((Path(cfg.evaluate.out_dir) / "metrics.json").read_text())
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
