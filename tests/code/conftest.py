"""Fixtures of the registry and promotion tests: a migrated MLflow store to copy, since a fresh one takes
about 2 s to create, and a tiny saved model, once per test module; and the detection service the
service, fuzz and load tests share, once per session. The trained detector and the media the inference,
service, review and browser tests share live in tests/conftest.py."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from launch_helpers import dfguard_server
from registry_helpers import evaluation, migrated_store, register_tiny, save_tiny_model
from service_helpers import (
    ADMIN_SECRET,
    BURST_SECRET,
    JOB_TTL_S,
    MAX_IMAGE_MB,
    MAX_VIDEO_MB,
    RATE_BURST,
    RATE_PER_S,
    SECRET,
    Service,
)

from dfguard.config import FeedbackConfig, RegistryConfig
from dfguard.registry import configure, move_alias
from dfguard.serving.launch import free_port


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


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory, trained_detector) -> Iterator[Service]:
    """`dfguard serve` with auth on, small upload caps, a 1 s champion check, and version 1 (the trained
    model) as champion; stopped (its whole process group) at the end of the session."""
    _, model_dir = trained_detector
    root = tmp_path_factory.mktemp("service")
    registry = RegistryConfig(root=str(root / "mlflow"))
    client = configure(registry)
    version = register_tiny(client, model_dir, evaluation(0.7))
    move_alias(client, "champion", version)
    keys = root / "api_keys"
    keys.write_text(
        "# id:sha256 of the secret\n"
        + "".join(
            f"{key_id}:{hashlib.sha256(secret.encode()).hexdigest()}\n"
            for key_id, secret in (("client", SECRET), ("admin", ADMIN_SECRET), ("burst", BURST_SECRET))
        )
    )
    feedback = FeedbackConfig(root=str(root / "feedback"), retry_s=0.5)
    params = root / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "registry": {"root": registry.root},
                "feedback": {"root": feedback.root, "retry_s": feedback.retry_s},
                "serve": {
                    "keys_file": str(keys),
                    "auth": "on",
                    "admin_key_ids": ["admin"],
                    "reload_interval_s": 1.0,
                    "max_image_mb": MAX_IMAGE_MB,
                    "max_video_mb": MAX_VIDEO_MB,
                    "max_batch_files": 4,
                    "rate_per_s": RATE_PER_S,
                    "rate_burst": RATE_BURST,
                    "job_ttl_s": JOB_TTL_S,
                },
            }
        )
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"BENTOML_HOME": str(root / "bentoml"), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    args = ["--params", str(params), "serve", "--port", str(port)]
    with dfguard_server(args, url, root / "serve.log", root, env) as process:
        yield Service(url, root, registry, feedback, root / "serve.log", process.pid)
