"""The `extract` flow: the manifest's items fanned out as Prefect tasks, then the face dataset's tables,
recorded as a new version of the DVC stage `extract`.

Each item is one task, retried on unexpected errors and cached under its content hash plus the
preprocessing contract (the same key as the face dataset's own per-item cache), so a re-run with
nothing changed runs no extraction at all. Tasks run in a local process pool by default; a team that
outgrows one machine points `dask_address` at an existing Dask cluster.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.context import TaskRunContext
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from dfguard.config import PARAMS_FILE, load_config
from dfguard.faces.dataset import (
    ExtractJob,
    ExtractResult,
    OutOfSpaceError,
    finish_extract,
    init_extract_worker,
    plan_extract,
    process_in_worker,
)
from dfguard.versioning import commit_stage, reproduce

RUNNERS = ("process", "thread", "dask")


def _item_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    job: ExtractJob = parameters["job"]
    # The cache file's name is the item's content hash plus the contract's key for it.
    return f"extract-{Path(job.cache_file).parent.parent.resolve()}-{Path(job.cache_file).stem}"


@task(name="extract-item", retries=2, retry_delay_seconds=5, cache_key_fn=_item_key, persist_result=True)
def extract_item(job: ExtractJob, contract_json: str, device: str) -> dict[str, float]:
    if Path(job.cache_file).exists():
        return {}  # extracted under this contract by an earlier run, flow or CLI: nothing to redo
    outcome = process_in_worker(job, contract_json, device)
    if isinstance(outcome, str):
        raise RuntimeError(f"{job.source}: {outcome}")  # Prefect retries it; the last error is recorded
    return outcome


def task_runner(runner: str, workers: int, dask_address: str = "", contract_json: str = "") -> TaskRunner:
    """The task runner the flow fans items out on."""
    workers = workers or os.cpu_count() or 1
    if runner == "process":
        return ProcessPoolTaskRunner(
            max_workers=workers, initializer=init_extract_worker, initargs=(contract_json, "")
        )
    if runner == "thread":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner == "dask":
        from prefect_dask import DaskTaskRunner  # only teams with a cluster need it loaded

        if dask_address:
            return DaskTaskRunner(address=dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1})
    raise ValueError(f"runner must be one of {RUNNERS}, got {runner!r}")


@flow(name="extract", log_prints=True)
def extract_flow(
    params_path: str = str(PARAMS_FILE),
    runner: str = "",
    workers: int = 0,
    dask_address: str = "",
    record_version: bool = True,
) -> dict[str, Any]:
    """Bring the manifest up to date (DVC stages up to `ingest`), extract every item's faces as tasks,
    write the dataset's tables and record the version in dvc.lock. Returns the run's figures.

    `runner`, `workers` and `dask_address` default to the `flows` section of the params file.
    """
    logger = get_run_logger()
    if record_version:
        reproduce("ingest")
    settings = load_config(Path(params_path))
    cfg, flows = settings.extract, settings.flows
    runner, dask_address = runner or flows.extract_runner, dask_address or flows.dask_address
    plan = plan_extract(cfg)
    contract_json = plan.contract.to_json()
    logger.info("extract: %d items (%d not cached on disk)", len(plan.jobs), len(plan.todo))
    missing = {job.video_id for job in plan.todo}
    if not missing:
        runner = "thread"  # every task is a cache hit: no detector, no worker processes to start
    with (
        _api_url_inherited(),
        task_runner(
            runner, workers or flows.workers or cfg.workers, dask_address, contract_json
        ) as runner_instance,
    ):
        futures = [
            runner_instance.submit(
                extract_item.with_options(refresh_cache=job.video_id in missing),
                {"job": job, "contract_json": contract_json, "device": cfg.device},
            )
            for job in plan.jobs
        ]
        stage_seconds: dict[str, float] = {}
        errors: dict[str, str] = {}
        for job, future in zip(plan.jobs, futures, strict=True):
            try:
                for stage, seconds in future.result().items():
                    stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
            except OutOfSpaceError:
                raise  # a full disk fails every item after it: stop, as `dfguard extract` does
            except Exception as err:  # one item's failure is recorded, the others still count
                errors[job.video_id] = f"{type(err).__name__}: {err}"
                logger.error("extract %s failed: %s", job.source, errors[job.video_id])
    result = finish_extract(plan, stage_seconds, errors)
    if record_version:
        commit_stage("extract")
    logger.info(
        "faces: %d from %d items (%d extracted, %d cached, %d failed) in %.0f s",
        result.faces,
        result.items,
        result.extracted,
        result.cached,
        result.failed,
        result.seconds,
    )
    return _figures(result)


@contextmanager
def _api_url_inherited() -> Iterator[None]:
    """Let worker processes report to this flow's API: without PREFECT_API_URL in their environment,
    each would start a temporary server of its own (seconds per worker, and runs scattered)."""
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = str(get_client().api_url)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def _figures(result: ExtractResult) -> dict[str, Any]:
    return {
        "out_dir": str(result.out_dir),
        "contract_hash": result.contract_hash,
        "items": result.items,
        "extracted": result.extracted,
        "cached": result.cached,
        "failed": result.failed,
        "faces": result.faces,
        "seconds": round(result.seconds, 1),
    }
