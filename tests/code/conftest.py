"""Fixtures of the registry and promotion tests: a migrated MLflow store to copy, since a fresh one takes
about 2 s to create, and a tiny saved model, once per test module. The trained detector and the media
the inference, service, review and browser tests share live in tests/conftest.py."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from registry_helpers import migrated_store, save_tiny_model


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder `tempfile` makes new folders under, for this test only: a test of code that makes
    temporary folders can then see what it leaves behind, and leaves nothing in the machine's /tmp."""
    root = tmp_path / "temp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_store(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "detector")
