"""Fixtures of the registry and promotion tests: a migrated MLflow store to copy (a fresh one takes
about 2 s to create) and a tiny saved model, once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_helpers import migrated_store, save_tiny_model


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_store(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "detector")
