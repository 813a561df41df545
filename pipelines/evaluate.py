"""The `evaluate` flow: any registered model (or run, or folder) on any face dataset version and split,
logged to MLflow as an evaluation run."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from dfguard.config import PARAMS_FILE, load_config
from dfguard.evaluation.run import run_evaluate
from dfguard.registry import configure, load
from dfguard.registry.runs import log_metrics
from dfguard.registry.store import experiment_id
from dfguard.versioning import output_hash


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    model_uri: str = "models:/dfguard-detector@champion",
    faces_dir: str = "",
    split: str = "test",
    params_path: str = str(PARAMS_FILE),
) -> dict[str, Any]:
    """Evaluate `model_uri` on `faces_dir` (default: the current face dataset) and log the metrics."""
    logger = get_run_logger()
    cfg = load_config(Path(params_path))
    faces_dir = faces_dir or cfg.evaluate.faces_dir
    client = configure(cfg.registry)
    label = hashlib.sha256(f"{model_uri}|{Path(faces_dir).resolve()}|{split}".encode()).hexdigest()[:10]
    out_dir = Path("reports/evaluations") / label
    # A registered model is downloaded for this evaluation only; a local folder is read where it is.
    with tempfile.TemporaryDirectory(prefix="dfguard-model-") as downloads:
        model_dir = load(client, model_uri, downloads)
        result = run_evaluate(
            dataclasses.replace(
                cfg.evaluate, model_dir=str(model_dir), faces_dir=faces_dir, split=split, out_dir=str(out_dir)
            ),
            progress=False,
        )
    dataset = output_hash(faces_dir) or "unknown"
    run = client.create_run(
        experiment_id(client, cfg.registry.experiment),
        run_name=f"evaluate {model_uri} on {split}",
        tags={"dfguard.kind": "evaluation", "dfguard.model_uri": model_uri, "dfguard.dataset_hash": dataset},
    )
    log_metrics(client, run.info.run_id, result.metrics)
    client.log_artifacts(run.info.run_id, str(out_dir), "evaluation")
    client.set_terminated(run.info.run_id)
    logger.info("%s on %s/%s: video AUC %s", model_uri, faces_dir, split, result.metrics["video"]["auc"])
    return {"run_id": run.info.run_id, "out_dir": str(out_dir), "video_auc": result.metrics["video"]["auc"]}
