"""MLflow tracking and model registry: one store, runs with lineage, versions with aliases, one `load`.

Typical use, from a flow or the CLI:

    client = configure(cfg.registry)
    lineage = collect_lineage(model_dir, cfg.train.faces_dir, flow_run_id=...)
    run_id = log_model_run(client, model_dir, params=..., resolved_config=..., metrics=..., lineage=lineage)
    version = register(client, run_id, lineage)  # a ModelVersion, now the challenger
    promote(client, version.version, cfg.promotion)  # dfguard.promotion: the gate, then the aliases
    folder = load(client, CHAMPION_URI)  # then dfguard.models.load_detector(folder)
"""

from dfguard.registry.aliases import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_URI,
    PREVIOUS,
    alias_transaction,
    current_aliases,
    move_alias,
    recover_interrupted,
)
from dfguard.registry.lineage import Lineage, collect_lineage, git_state, model_contract
from dfguard.registry.loading import load, resolve_version
from dfguard.registry.model_files import model_digest
from dfguard.registry.publish import (
    Registered,
    champion_to_rescore,
    dataset_of,
    evaluate_model,
    evaluation_on,
    register_challenger,
)
from dfguard.registry.runs import METRICS_ARTIFACT, MODEL_ARTIFACT, log_model_run
from dfguard.registry.store import MODEL_NAME, configure, embedded_uri
from dfguard.registry.versions import (
    VersionSummary,
    get_version,
    list_versions,
    register,
    version_metrics,
    version_summaries,
)

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "CHAMPION_URI",
    "METRICS_ARTIFACT",
    "MODEL_ARTIFACT",
    "MODEL_NAME",
    "PREVIOUS",
    "Lineage",
    "Registered",
    "VersionSummary",
    "alias_transaction",
    "champion_to_rescore",
    "collect_lineage",
    "configure",
    "current_aliases",
    "dataset_of",
    "embedded_uri",
    "evaluate_model",
    "evaluation_on",
    "get_version",
    "git_state",
    "list_versions",
    "load",
    "log_model_run",
    "model_contract",
    "model_digest",
    "move_alias",
    "recover_interrupted",
    "register",
    "register_challenger",
    "resolve_version",
    "version_metrics",
    "version_summaries",
]
