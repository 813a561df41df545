"""Where the feedback loop leaves what reviewers and engineers look at: Evidently drift reports (HTML
files in `loop.drift_dir`) and the loop's runs (MLflow runs tagged as loop runs). The dashboard's
drift page reads them from here; the loop writes them with the same names."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow import MlflowClient

LOOP_RUN_TAG = "dfguard.loop"  # on the MLflow run of each loop decision; its value is the decision


def drift_reports(folder: str | Path) -> list[Path]:
    """The drift reports in `folder`, newest first (their names start with the UTC time they were made)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.glob("*.html") if p.is_file()), key=lambda p: p.name, reverse=True)


def loop_runs(client: MlflowClient, experiment: str, limit: int = 100) -> pd.DataFrame:
    """The loop's runs, newest first: start time, decision, status, and their metrics as columns."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame(columns=["run_id", "started", "decision", "status"])
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`{LOOP_RUN_TAG}` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    rows = [
        {
            "run_id": run.info.run_id,
            "started": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
            "decision": run.data.tags.get(LOOP_RUN_TAG, ""),
            "status": run.info.status,
            **run.data.metrics,
        }
        for run in runs
    ]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "started", "decision", "status"])
