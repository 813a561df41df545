"""The `evaluate` flow: any registered model (or run, or folder) on any face dataset version and split,
logged to MLflow as an evaluation run (`dfguard.registry.evaluate_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from dfguard.config import PARAMS_FILE, load_config
from dfguard.models.features import use_store_if_made
from dfguard.registry import CHAMPION_URI, configure, evaluate_model


@flow(name="evaluate", log_prints=True)
def evaluate_flow(
    model_uri: str = CHAMPION_URI,
    faces_dir: str = "",
    split: str = "test",
    params_path: str = str(PARAMS_FILE),
) -> dict[str, Any]:
    """Evaluate `model_uri` on `faces_dir` (default: the current face dataset) and log the metrics."""
    cfg = load_config(Path(params_path))
    use_store_if_made(cfg.embed.out_dir)  # frozen-backbone models score cached crops
    result = evaluate_model(configure(cfg.registry), cfg, model_uri, faces_dir, split)
    auc = result["metrics"]["video"]["auc"]
    get_run_logger().info(
        "%s on %s/%s: video AUC %s", model_uri, faces_dir or cfg.evaluate.faces_dir, split, auc
    )
    return {"run_id": result["run_id"], "out_dir": result["out_dir"], "video_auc": auc}
