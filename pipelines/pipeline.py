"""The `pipeline` flow: raw data to a promoted champion. extract (fanned out) -> train -> promote, then
every data and model version pushed to the DVC remote. Returns each flow's wall time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from dfguard.config import PARAMS_FILE, load_config
from dfguard.registry import CHAMPION, MODEL_NAME, champion_to_rescore, configure, get_version
from dfguard.versioning import push
from pipelines.evaluate import evaluate_flow
from pipelines.extract import extract_flow
from pipelines.promote import promote_flow
from pipelines.train import train_flow


@flow(name="pipeline", log_prints=True)
def pipeline_flow(params_path: str = str(PARAMS_FILE)) -> dict[str, Any]:
    logger = get_run_logger()
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    extracted = extract_flow(params_path=params_path)
    seconds["extract"] = time.perf_counter() - started
    started = time.perf_counter()
    trained = train_flow(params_path=params_path)
    seconds["train"] = time.perf_counter() - started
    started = time.perf_counter()
    # The gate compares figures measured on one face dataset: a champion trained on an older one is
    # re-scored on the challenger's first.
    cfg = load_config(Path(params_path))
    stale = champion_to_rescore(configure(cfg.registry), trained["version"], cfg.registry.experiment)
    if stale is not None:
        evaluate_flow(model_uri=f"models:/{MODEL_NAME}/{stale}", params_path=params_path)
    # A model registered by an earlier run whose gate failed is gated again (the champion may have
    # changed since); only the reigning champion is left alone.
    promotion = (
        {"version": trained["version"], "promoted": False, "reasons": ["already the champion"]}
        if _is_champion(trained["version"], params_path)
        else promote_flow(version=trained["version"], params_path=params_path)
    )
    seconds["promote"] = time.perf_counter() - started
    started = time.perf_counter()
    push()
    seconds["push"] = time.perf_counter() - started
    seconds = {k: round(v, 1) for k, v in seconds.items()}
    logger.info("pipeline done in %.0f s: %s", sum(seconds.values()), seconds)
    return {"extract": extracted, "train": trained, "promote": promotion, "seconds": seconds}


def _is_champion(version: str, params_path: str) -> bool:
    client = configure(load_config(Path(params_path)).registry)
    return CHAMPION in get_version(client, version).aliases
