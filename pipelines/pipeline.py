"""The `pipeline` flow: raw data to a promoted champion. extract (fanned out) -> train -> promote, then
every data and model version pushed to the DVC remote. Returns each flow's wall time."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger

from dfguard.config import PARAMS_FILE
from dfguard.versioning import push
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
    promotion = (
        promote_flow(version=trained["version"], params_path=params_path)
        if trained["registered"]
        else {
            "version": trained["version"],
            "promoted": False,
            "reasons": ["already registered: no new model"],
        }
    )
    seconds["promote"] = time.perf_counter() - started
    started = time.perf_counter()
    push()
    seconds["push"] = time.perf_counter() - started
    seconds = {k: round(v, 1) for k, v in seconds.items()}
    logger.info("pipeline done in %.0f s: %s", sum(seconds.values()), seconds)
    return {"extract": extracted, "train": trained, "promote": promotion, "seconds": seconds}
