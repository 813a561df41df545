"""Registered versions of the detector: creating them with their lineage, finding them by number or
alias, and reading back what was logged with them."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from dfguard.registry.aliases import CHALLENGER
from dfguard.registry.lineage import Lineage
from dfguard.registry.runs import METRICS_ARTIFACT, MODEL_ARTIFACT
from dfguard.registry.store import MODEL_NAME


def register(client: MlflowClient, run_id: str, lineage: Lineage) -> ModelVersion:
    """Register the model logged in run `run_id` as a new version tagged with its lineage, and make it
    the challenger."""
    try:
        client.create_registered_model(MODEL_NAME, description="dfguard deepfake detectors")
    except MlflowException as err:  # every registration but the first
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(
        MODEL_NAME, f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id, tags=lineage.to_tags()
    )
    client.set_registered_model_alias(MODEL_NAME, CHALLENGER, version.version)
    return client.get_model_version(MODEL_NAME, version.version)


def get_version(client: MlflowClient, ref: str | int) -> ModelVersion:
    """A version by number ("3", 3) or alias ("champion")."""
    text = str(ref)
    try:
        if text.isdigit():
            return client.get_model_version(MODEL_NAME, text)
        return client.get_model_version_by_alias(MODEL_NAME, text)
    except MlflowException as err:
        raise ValueError(f"{MODEL_NAME} has no version {text!r}: {err.message}") from err


def list_versions(client: MlflowClient) -> list[ModelVersion]:
    """Every registered version, newest first (none before the first registration)."""
    found = client.search_model_versions(filter_string=f"name = '{MODEL_NAME}'")
    numbers = sorted((int(v.version) for v in found), reverse=True)
    # Search results leave out aliases: each version is read again, with them.
    return [client.get_model_version(MODEL_NAME, str(number)) for number in numbers]


def version_metrics(client: MlflowClient, version: ModelVersion) -> dict[str, Any]:
    """The evaluation metrics logged with a version's run, as the evaluation wrote them."""
    with TemporaryDirectory(prefix="dfguard-metrics-") as tmp:
        try:
            path = client.download_artifacts(version.run_id, METRICS_ARTIFACT, tmp)
        except (MlflowException, OSError) as err:
            raise ValueError(f"version {version.version} has no {METRICS_ARTIFACT}: {err}") from err
        return json.loads(Path(path).read_text())


@dataclass(frozen=True)
class VersionSummary:
    """A registered version as `dfguard models list` and the dashboard's models page show it."""

    version: str
    aliases: tuple[str, ...]
    created: datetime
    video_auc: float  # the run's logged metrics; NaN when missing
    video_ece: float
    gate: str  # the last promotion gate's verdict ("True", "False") or "-" when never gated
    run_id: str
    tags: dict[str, str]


def version_summaries(client: MlflowClient) -> list[VersionSummary]:
    """Every registered version with its headline metrics, newest first."""
    summaries = []
    for version in list_versions(client):
        metrics = client.get_run(version.run_id).data.metrics
        summaries.append(
            VersionSummary(
                version=str(version.version),
                aliases=tuple(sorted(version.aliases)),
                created=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
                video_auc=float(metrics.get("video.auc", math.nan)),
                video_ece=float(metrics.get("video.ece", math.nan)),
                gate=version.tags.get("gate.passed", "-"),
                run_id=version.run_id,
                tags=dict(version.tags),
            )
        )
    return summaries
