"""What the pipeline records in the registry: a calibrated model as the challenger (once per exact
model), and evaluations of registered models on a face dataset version, which the promotion gate reads
when the champion was measured on another dataset than the challenger."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from dfguard.config import Config, shareable
from dfguard.metrics import METRICS_NAME
from dfguard.registry.aliases import CHAMPION, current_aliases
from dfguard.registry.lineage import TAG_PREFIX, UNKNOWN, collect_lineage
from dfguard.registry.loading import load, resolve_version
from dfguard.registry.model_files import model_digest, model_file_names
from dfguard.registry.runs import METRICS_ARTIFACT, log_metrics, log_model_run
from dfguard.registry.store import MODEL_NAME, experiment_id
from dfguard.registry.versions import get_version, list_versions, register
from dfguard.versioning import output_hash

MODEL_DIGEST_TAG = "dfguard.model_sha256"
DATASET_TAG = TAG_PREFIX + "dataset_hash"
EVALUATION_KIND = "evaluation"
EVALUATIONS_DIR = Path("reports/evaluations")


@dataclass(frozen=True)
class Registered:
    version: str
    registered: bool  # False: that exact model was registered before, under `version`
    run_id: str


def register_challenger(
    client: MlflowClient, cfg: Config, flow_run_id: str = "", parent_run_id: str = ""
) -> Registered:
    """Log the calibrated model (`cfg.calibrate.out_dir`) with its evaluation and lineage, and register
    it as the challenger, unless that exact model is registered already: a re-run with nothing changed
    must not pile up identical versions."""
    model_dir = Path(cfg.calibrate.out_dir)
    digest = model_digest(model_dir)
    for version in list_versions(client):
        if version.tags.get(MODEL_DIGEST_TAG) == digest:
            return Registered(str(version.version), False, version.run_id)
    metrics = json.loads((Path(cfg.evaluate.out_dir) / METRICS_NAME).read_text())
    training = json.loads((model_dir / model_file_names()[1]).read_text()).get("training", {})
    lineage = collect_lineage(
        model_dir, cfg.train.faces_dir, parent_run_id=parent_run_id, flow_run_id=flow_run_id
    )
    run_id = log_model_run(
        client,
        model_dir,
        params={"train": dataclasses.asdict(cfg.train), "extract": dataclasses.asdict(cfg.extract)},
        resolved_config=shareable(cfg),
        metrics={**metrics, "training": {k: v for k, v in training.items() if k != "config"}},
        lineage=lineage,
        artifacts={"evaluation": cfg.evaluate.out_dir, "calibration": cfg.calibrate.report_dir},
        experiment=cfg.registry.experiment,
        run_name=f"{training.get('config', {}).get('model', 'model')}-{digest[:8]}",
    )
    version = register(client, run_id, lineage)
    client.set_model_version_tag(MODEL_NAME, version.version, MODEL_DIGEST_TAG, digest)
    return Registered(str(version.version), True, run_id)


def dataset_of(version: ModelVersion) -> str:
    """The face dataset version (DVC hash) a registered model was trained and evaluated on."""
    return version.tags.get(DATASET_TAG, UNKNOWN)


def evaluate_model(
    client: MlflowClient, cfg: Config, model_uri: str, faces_dir: str = "", split: str = "test"
) -> dict[str, Any]:
    """Evaluate a registered model (`models:/...`, `runs:/...`) or a model folder on a face dataset
    (default: the current one) and log the metrics as an evaluation run tagged with the model's version
    and the dataset's hash. Returns the run id, the report folder and the metrics."""
    from dfguard.evaluation.run import run_evaluate  # torch: only when a model is actually scored

    faces_dir = faces_dir or cfg.evaluate.faces_dir
    label = hashlib.sha256(f"{model_uri}|{Path(faces_dir).resolve()}|{split}".encode()).hexdigest()[:10]
    out_dir = EVALUATIONS_DIR / label
    # A registered model is downloaded for this evaluation only; a local folder is read where it is.
    with tempfile.TemporaryDirectory(prefix="dfguard-model-") as downloads:
        model_dir = load(client, model_uri, downloads)
        evaluation = dataclasses.replace(
            cfg.evaluate, model_dir=str(model_dir), faces_dir=faces_dir, split=split, out_dir=str(out_dir)
        )
        metrics = run_evaluate(evaluation, progress=False).metrics
    tags = {
        "dfguard.kind": EVALUATION_KIND,
        "dfguard.model_uri": model_uri,
        "dfguard.split": split,
        "dfguard.dataset_hash": output_hash(faces_dir) or UNKNOWN,
    }
    if model_uri.startswith("models:/"):
        tags["dfguard.model_version"] = resolve_version(client, model_uri)[1]
    run = client.create_run(
        experiment_id(client, cfg.registry.experiment), run_name=f"evaluate {model_uri} on {split}", tags=tags
    )
    log_metrics(client, run.info.run_id, metrics)
    client.log_dict(run.info.run_id, metrics, METRICS_ARTIFACT)
    client.log_artifacts(run.info.run_id, str(out_dir), "evaluation")
    client.set_terminated(run.info.run_id)
    return {"run_id": run.info.run_id, "out_dir": str(out_dir), "metrics": metrics}


def evaluation_on(
    client: MlflowClient, version: str, dataset_hash: str, experiment: str, split: str = "test"
) -> dict[str, Any] | None:
    """The metrics of the latest evaluation run of registered `version` on the face dataset
    `dataset_hash` (`evaluate_model`), or None when it was never evaluated there."""
    experiment_ids = [experiment_id(client, experiment)]
    runs = client.search_runs(
        experiment_ids,
        filter_string=(
            f"tags.`dfguard.kind` = '{EVALUATION_KIND}' and tags.`dfguard.model_version` = '{version}' "
            f"and tags.`dfguard.dataset_hash` = '{dataset_hash}' and tags.`dfguard.split` = '{split}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    with tempfile.TemporaryDirectory(prefix="dfguard-metrics-") as tmp:
        path = client.download_artifacts(runs[0].info.run_id, METRICS_ARTIFACT, tmp)
        return json.loads(Path(path).read_text())


def champion_to_rescore(client: MlflowClient, challenger: str, experiment: str) -> str | None:
    """The champion's version number when its metrics were measured on another face dataset than the
    `challenger`'s and it has not been re-scored on the challenger's yet (the promotion gate compares
    only figures measured on one dataset); None when there is nothing to do."""
    champion = current_aliases(client).get(CHAMPION)
    if champion is None or champion == str(get_version(client, challenger).version):
        return None
    dataset = dataset_of(get_version(client, challenger))
    if dataset_of(get_version(client, champion)) == dataset:
        return None
    return None if evaluation_on(client, champion, dataset, experiment) is not None else champion
