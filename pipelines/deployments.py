"""`dfguard flows serve`: the flows as deployments on their schedules, served from this process.

Schedules need a real Prefect server (`dfguard server start`, or PREFECT_API_URL pointing at a team's):
the temporary server a plain flow call starts refuses to schedule.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

from dfguard.config import FlowsConfig
from pipelines.evaluate import evaluate_flow
from pipelines.extract import extract_flow
from pipelines.loop import loop_flow
from pipelines.pipeline import pipeline_flow
from pipelines.promote import promote_flow
from pipelines.train import train_flow


def deployments(cfg: FlowsConfig, params_path: str) -> list[RunnerDeployment]:
    """The nightly pipeline, the hourly extraction and the loop on schedules; the others on demand."""
    params = {"params_path": params_path}
    return [
        pipeline_flow.to_deployment(name="nightly", cron=cfg.pipeline_cron, parameters=params),
        extract_flow.to_deployment(
            name="hourly", interval=timedelta(minutes=cfg.extract_interval_minutes), parameters=params
        ),
        train_flow.to_deployment(name="on-demand", parameters=params),
        evaluate_flow.to_deployment(name="on-demand", parameters=params),
        promote_flow.to_deployment(name="on-demand", parameters=params),
        # The loop's gate waits until enough new labels came in: polling it is the "after N labels"
        # trigger; the on-demand deployment is the dashboard's button and `prefect deployment run`.
        loop_flow.to_deployment(
            name="after-labels", interval=timedelta(minutes=cfg.loop_interval_minutes), parameters=params
        ),
        loop_flow.to_deployment(name="on-demand", parameters=params),
    ]


def serve_flows(cfg: FlowsConfig, params_path: str) -> None:
    """Register the deployments and run their scheduled and triggered runs until interrupted."""
    serve(*deployments(cfg, params_path))
