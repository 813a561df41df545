"""The one MLflow tracking store and model registry: embedded sqlite + artifact folder, or a team's server.

The embedded store keeps runs and the registry in one sqlite file (MLflow's file store has no registry)
and artifacts in a folder beside it. Its experiment gets that folder as an explicit artifact location:
left to MLflow, artifacts land in `./mlruns` of whatever directory the process started in.
"""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from dfguard.config import RegistryConfig

MODEL_NAME = "dfguard-detector"  # the one registered model: every trained detector is a version of it
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"


def embedded_uri(root: str | Path) -> str:
    """The sqlite URI of the embedded store under `root` (absolute: sqlite resolves relative paths
    against the working directory of whichever process opens it)."""
    return f"sqlite:///{(Path(root) / DB_NAME).resolve()}"


def configure(cfg: RegistryConfig) -> MlflowClient:
    """A client for the configured store, with the experiment created (the embedded store's folder too)."""
    root = Path(cfg.root)
    if cfg.tracking_uri.startswith(("http://", "https://")):
        artifact_location = None  # the server decides where artifacts go (its --artifacts-destination)
    else:
        # The embedded store, or a database URL used directly (PostgreSQL), where MLflow alone would put
        # artifacts in ./mlruns of whichever folder the first process ran from: under `registry.root`
        # (a folder every host must share, or use an `mlflow server` with --artifacts-destination).
        (root / ARTIFACTS_DIR).mkdir(parents=True, exist_ok=True)
        artifact_location = (root / ARTIFACTS_DIR).resolve().as_uri()
    uri = cfg.tracking_uri or embedded_uri(root)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if client.get_experiment_by_name(cfg.experiment) is None:
        try:
            client.create_experiment(cfg.experiment, artifact_location=artifact_location)
        except MlflowException as err:  # another process (a parallel flow run) created it first
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`; `configure` creates it."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise ValueError(f"no experiment {name!r} in {client.tracking_uri}: call configure() first")
    return experiment.experiment_id
