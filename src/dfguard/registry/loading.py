"""The single way every consumer (evaluation, service, dashboard, flows) gets a model folder."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dfguard.registry.model_files import require_saved_model

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))/?$")


def load(client: MlflowClient, uri: str | Path, dst_dir: str | Path | None = None) -> Path:
    """The local model folder `uri` names, downloaded under `dst_dir` (a new temporary folder by default,
    which the caller owns); pass the result to `dfguard.models.load_detector`.

    `uri` is `models:/<name>@<alias>`, `models:/<name>/<version>`, `runs:/<run id>/<path>` or a local
    model folder (returned as it is).
    """
    text = str(uri)
    if not text.startswith(("models:/", "runs:/")):
        return require_saved_model(Path(text))
    if text.startswith("models:/"):
        text = _download_uri(client, text)
    destination = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="dfguard-model-"))
    try:
        return require_saved_model(_download(client, text, destination, uri))
    except BaseException:
        # The caller never learns the path of a folder made here for a load that failed: remove it.
        if dst_dir is None:
            shutil.rmtree(destination, ignore_errors=True)
        raise


def _download(client: MlflowClient, artifact_uri: str, destination: Path, uri: str | Path) -> Path:
    """The artifacts at `artifact_uri`, downloaded under `destination`; ValueError naming `uri` if not."""
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(destination), tracking_uri=client.tracking_uri
        )
    except MlflowException as err:
        raise ValueError(f"cannot download {uri}: {err.message}") from err
    return Path(local)


def resolve_version(client: MlflowClient, uri: str) -> tuple[str, str]:
    """(model name, version number) of a `models:/<name>@<alias>` or `models:/<name>/<version>` URI;
    ValueError for any other URI or a version the registry does not have."""
    match = _MODELS_URI.match(uri)
    if match is None:
        raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    if not match["alias"]:
        return match["name"], match["version"]
    try:
        return match["name"], str(client.get_model_version_by_alias(match["name"], match["alias"]).version)
    except MlflowException as err:
        raise ValueError(f"{uri}: {err.message}") from err


def _download_uri(client: MlflowClient, uri: str) -> str:
    """Where a registered version's files are; resolved with `client`, where MLflow's own resolution of
    `models:/` would use the process-wide registry URI."""
    name, version = resolve_version(client, uri)
    try:
        return client.get_model_version_download_uri(name, version)
    except MlflowException as err:
        raise ValueError(f"{uri}: {err.message}") from err
