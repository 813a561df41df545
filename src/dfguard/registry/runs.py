"""One MLflow run per trained model: its params, resolved config, metrics, plots, reports and the model
folder itself (safetensors + JSON config, never a pickle), tagged with its lineage."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from dfguard.config import RESOLVED_CONFIG_NAME, RegistryConfig
from dfguard.registry.lineage import Lineage
from dfguard.registry.model_files import model_file_names, require_saved_model
from dfguard.registry.store import experiment_id

MODEL_ARTIFACT = "model"  # the model folder's path inside the run
METRICS_ARTIFACT = "metrics.json"  # the evaluation's own dict, read back by the promotion gate
CONTRACT_ARTIFACT = "contract.json"
# torch.save, joblib and pickle outputs: loading any of them can run arbitrary code.
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})
_BAD_NAME_CHARS = re.compile(r"[^\w./ :-]")


def log_model_run(
    client: MlflowClient,
    model_dir: str | Path,
    *,
    params: Mapping[str, Any],
    resolved_config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    lineage: Lineage,
    artifacts: Mapping[str, str | Path] | None = None,
    experiment: str = RegistryConfig.experiment,
    run_name: str | None = None,
) -> str:
    """Log a saved model and everything about it as one finished run; returns the run id.

    `params` and `metrics` may be nested: they are flattened to dotted names, and metrics that are not
    numbers are left out. `metrics` is also stored verbatim as `metrics.json`. `artifacts` maps a
    folder name in the run to a file or folder to put there (plots, reports).
    """
    folder = _checked_model_dir(Path(model_dir))
    model_name = json.loads((folder / model_file_names()[1]).read_text())["model"]["name"]
    tags = {**lineage.to_tags(), "dfguard.model": model_name}
    if lineage.parent_run_id:
        tags["mlflow.parentRunId"] = lineage.parent_run_id  # nests the run under the pipeline's in the UI
    with _finished_run(client, experiment, tags, run_name, params, metrics) as run_id:
        client.log_dict(run_id, dict(resolved_config), RESOLVED_CONFIG_NAME)
        client.log_dict(run_id, lineage.contract, CONTRACT_ARTIFACT)
        for destination, source in (artifacts or {}).items():
            path = Path(source)
            if path.is_dir():
                client.log_artifacts(run_id, str(path), destination)
            else:
                client.log_artifact(run_id, str(path), destination)
        client.log_artifacts(run_id, str(folder), MODEL_ARTIFACT)
    return run_id


def log_study_run(
    client: MlflowClient,
    kind: str,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    files: Sequence[str | Path],
    experiment: str = RegistryConfig.experiment,
    run_name: str | None = None,
) -> str:
    """Log a study that yields figures but no model to ship (a cross-validation) as one finished run,
    tagged `dfguard.kind`, beside the model runs it informs; returns the run id. `files` (reports,
    plots) go into the run's folder named `kind`."""
    with _finished_run(client, experiment, {"dfguard.kind": kind}, run_name, params, metrics) as run_id:
        for path in files:
            client.log_artifact(run_id, str(path), kind)
    return run_id


@contextmanager
def _finished_run(
    client: MlflowClient,
    experiment: str,
    tags: Mapping[str, str],
    run_name: str | None,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> Iterator[str]:
    """A new run with its params, metrics and `metrics.json` logged; the body logs the rest. The run
    ends FINISHED, or FAILED when the body raises, so no run is left looking live."""
    run = client.create_run(experiment_id(client, experiment), tags=dict(tags), run_name=run_name)
    run_id = run.info.run_id
    try:
        for batch in _batches(_params(params), MAX_PARAMS_TAGS_PER_BATCH):
            client.log_batch(run_id, params=batch)
        log_metrics(client, run_id, metrics)
        client.log_dict(run_id, dict(metrics), METRICS_ARTIFACT)
        yield run_id
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, Any]) -> None:
    """Log the numbers of a nested metrics dict under dotted names (other values are left out)."""
    for batch in _batches(_metrics(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=batch)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys: {"video": {"auc": 0.9}} -> {"video.auc": 0.9}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _checked_model_dir(folder: Path) -> Path:
    require_saved_model(folder)
    pickles = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(f"{folder} holds pickle files, which the registry refuses: {', '.join(pickles)}")
    return folder


def _name(key: str) -> str:
    # Method names come from dataset folders; MLflow rejects most punctuation in names.
    return _BAD_NAME_CHARS.sub("_", key)


def _params(params: Mapping[str, Any]) -> list[Param]:
    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    return [Param(_name(k), text(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in flatten(params).items()]


def _metrics(metrics: Mapping[str, Any]) -> list[Metric]:
    now_ms = int(time.time() * 1000)
    numeric = {
        k: v for k, v in flatten(metrics).items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    return [Metric(_name(k), float(v), timestamp=now_ms, step=0) for k, v in numeric.items()]


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
