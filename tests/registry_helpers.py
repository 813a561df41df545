"""Shared set-up of the registry and promotion tests: a real sqlite MLflow store per test, a tiny saved
detector, and evaluation metrics in the layout the promotion gate reads."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from dfguard.config import ExtractConfig, RegistryConfig
from dfguard.faces.contract import PreprocessingContract
from dfguard.models import get_model, save_detector
from dfguard.registry import Lineage, configure, embedded_uri, log_model_run, register
from dfguard.registry.store import DB_NAME
from dfguard.runtime import TELEMETRY_OFF

TINY_INPUT_PX = 32


def migrated_store(root: Path) -> Path:
    """An empty MLflow database with its tables created (MLflow's migrations take about 2 s: they run
    once per test module, and each test copies the file)."""
    root.mkdir(parents=True, exist_ok=True)
    MlflowClient(tracking_uri=embedded_uri(root)).search_experiments()
    return root / DB_NAME


def store_from(
    template_db: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[MlflowClient, RegistryConfig]:
    """A fresh embedded store under `root`, copied from a migrated template, with telemetry off."""
    for key, value in TELEMETRY_OFF.items():
        monkeypatch.setenv(key, value)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_db, root / DB_NAME)
    cfg = RegistryConfig(root=str(root))
    return configure(cfg), cfg


def save_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """A small_cnn detector with random weights, saved with a preprocessing contract as training does."""
    import torch

    torch.manual_seed(seed)
    model = get_model("small_cnn", widths=[4, 8], input_size=TINY_INPUT_PX)
    contract = PreprocessingContract.from_config(ExtractConfig())
    extra = {
        "contract": contract.to_dict(),
        "contract_hash": contract.hash,
        "aggregation": {"frames": "mean"},
    }
    return save_detector(model, out_dir, extra_config=extra)


def evaluation(auc: float, ece: float = 0.03, **method_auc: float) -> dict[str, Any]:
    """Metrics in the layout the evaluation writes (`metrics.json`)."""
    methods = method_auc or {"FaceSwap": auc, "SelfBlend": auc}
    return {
        "video": {"auc": auc, "ece": ece, "n": 40},
        "by_method": {method: {"auc": value} for method, value in methods.items()},
    }


TINY_DATASET = "d41d8cd98f00b204e9800998ecf8427e.dir"


def tiny_lineage(model_dir: Path, dataset: str = TINY_DATASET) -> Lineage:
    from dfguard.registry import model_contract

    contract, contract_hash = model_contract(model_dir)
    return Lineage(dataset, "0" * 40, False, contract_hash, contract)


def register_tiny(
    client: MlflowClient, model_dir: Path, metrics: dict[str, Any], dataset: str = TINY_DATASET
) -> str:
    """Log `model_dir` with `metrics` (measured on face dataset `dataset`) and register it; returns the
    version number."""
    lineage = tiny_lineage(model_dir, dataset)
    run_id = log_model_run(
        client, model_dir, params={"model": "small_cnn"}, resolved_config={}, metrics=metrics, lineage=lineage
    )
    return str(register(client, run_id, lineage).version)
