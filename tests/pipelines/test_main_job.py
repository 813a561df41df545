"""End to end: the main job (`dfguard run`) on a small corpus in a scratch project: fetch -> corpus ->
ingest -> extract (a real Prefect flow run) -> train -> calibrate -> evaluate -> MLflow registry ->
promotion -> DVC push, then the incremental behaviour DVC promises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DFGUARD = str(Path(sys.executable).parent / "dfguard")


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, sources_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("project")
    shutil.copy(REPO / "dvc.yaml", root)
    shutil.copy(REPO / "data.dvc", root)
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["corpus"].update({"max_identities": 6, "clips_per_identity": 2, "duration_s": [1.0, 1.5]})
    params["extract"].update({"frames_train": 4, "frames_val": 4, "frames_test": 6})
    params["train"].update({"head_epochs": 10})  # the default detector, on its embed stage's features
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(sources_dir, root / "data" / "raw" / "sources")  # as fetched; the job must not refetch
    _run(["git", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "init", "-q"], root)
    _run([sys.executable, "-m", "dvc", "remote", "add", "-d", "local", str(root / "remote")], root)
    _run(["git", "add", "dvc.yaml", "params.yaml", "src", ".dvc"], root)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "scratch"], root)
    return root


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_first_run_builds_versions_and_pushes_everything(project: Path) -> None:
    _run([DFGUARD, "run"], project)
    index = json.loads((project / "data/corpus/demo/dfguard_corpus.json").read_text())
    assert len(index["clips"]) == 24 and len(index["identities"]) == 6
    manifest = pd.read_parquet(project / "data/manifest/manifest.parquet")
    assert len(manifest) == 24
    assert (manifest.label == "fake").sum() == 12
    assert set(manifest.split) == {"train", "val", "test"}
    people = pd.concat(
        [
            manifest[["split", "source_identity"]].set_axis(["split", "who"], axis=1),
            manifest[["split", "target_identity"]].set_axis(["split", "who"], axis=1),
        ]
    )
    assert people.groupby("who").split.nunique().max() == 1, "a person appears in two splits"
    faces = pd.read_parquet(project / "data/faces/faces.parquet")
    assert set(faces.video_id) == set(manifest.video_id), "every clip of the corpus shows a face"
    assert all((project / "data/faces" / crop).is_file() for crop in faces.crop)
    assert yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    status = _run([sys.executable, "-m", "dvc", "status", "--cloud"], project).stdout
    assert "in sync" in status.lower(), status  # everything local was pushed
    metrics = json.loads((project / "reports/evaluate/metrics.json").read_text())
    assert 0.0 <= metrics["video"]["auc"] <= 1.0 and set(metrics["by_method"]) == {"FaceSwap", "SelfBlend"}
    assert list((project / "reports/detect").glob("*/report.json")), "no detect report on the held-out clip"
    store = json.loads((project / "data/embeddings/store.json").read_text())
    assert store["rows"] == len(faces) + (faces.label == "real").sum(), (
        "every crop and one self-blend per real"
    )


def test_first_run_leaves_a_champion_with_its_lineage(project: Path) -> None:
    from mlflow import MlflowClient

    from dfguard.registry import embedded_uri
    from dfguard.versioning import output_hash

    client = MlflowClient(
        tracking_uri=embedded_uri(project / "mlflow"), registry_uri=embedded_uri(project / "mlflow")
    )
    champion = client.get_model_version_by_alias("dfguard-detector", "champion")
    tags = champion.tags
    assert tags["lineage.dataset_hash"] == output_hash("data/faces", project)
    assert len(tags["lineage.git_commit"]) == 40 and tags["lineage.flow_run_id"]
    assert tags["gate.passed"] == "true"
    contract = json.loads((project / "data/faces/contract.json").read_text())
    assert tags["lineage.contract_hash"] == contract["hash"]


def test_second_run_with_nothing_changed_does_nothing(project: Path) -> None:
    corpus_index = project / "data/corpus/demo/dfguard_corpus.json"
    manifest = project / "data/manifest/manifest.parquet"
    before = (_mtime(corpus_index), _mtime(manifest))
    output = _run([DFGUARD, "run"], project)
    assert (_mtime(corpus_index), _mtime(manifest)) == before
    assert "Running stage" not in output.stdout + output.stderr
    assert "already registered" in output.stdout and "already the champion" in output.stdout


@pytest.mark.slow  # two minutes; the first and the repeated run keep DVC's bookkeeping in `make test`
def test_changed_ingest_param_reruns_only_ingest(project: Path) -> None:
    corpus_index = project / "data/corpus/demo/dfguard_corpus.json"
    manifest = project / "data/manifest/manifest.parquet"
    if not corpus_index.is_file():  # run alone (`make test-slow`): the first run comes first
        _run([DFGUARD, "run"], project)
    corpus_before, manifest_before = _mtime(corpus_index), _mtime(manifest)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["split_seed"] = 99
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    output = _run([DFGUARD, "run"], project).stdout
    assert "Running stage 'ingest'" in output and "Running stage 'corpus'" not in output
    assert _mtime(corpus_index) == corpus_before
    assert _mtime(manifest) != manifest_before
    assert json.loads((project / "data/manifest/resolved_config.json").read_text())["split_seed"] == 99


@pytest.mark.slow  # about two minutes: a real service judges the stream, then a fine-tune and promotion gate
def test_loop_demo_labels_as_simulated_fine_tunes_and_reports_before_and_after(project: Path) -> None:
    import sqlite3

    if not (project / "data/manifest/manifest.parquet").is_file():  # run alone: the first run comes first
        _run([DFGUARD, "run"], project)
    output = _run(
        [DFGUARD, "loop", "demo", "--labels", "8", "--decide", "finetune", "--out", "build/demo"], project
    )
    assert "SIMULATED REVIEWER" in output.stdout and "shifted holdout" in output.stdout
    figures = json.loads((project / "build/demo/demo.json").read_text())
    manifest = pd.read_parquet(project / "data/manifest/manifest.parquet")
    holdout = int((manifest.split == "test").sum())
    assert figures["holdout"]["before"]["n"] == figures["holdout"]["after"]["n"] == holdout
    assert figures["decision"]["action"] == "finetune" and figures["challenger"]
    assert set(figures["frozen_suite"]) == {"champion", "challenger"}
    with sqlite3.connect(project / "data/feedback/predictions.db") as db:
        reviewers = {row[0] for row in db.execute("select distinct reviewer from labels")}
        judged = db.execute("select count(*) from predictions").fetchone()[0]
    assert reviewers == {"simulated-reviewer"} and figures["labels"] <= 8
    assert judged == 2 * holdout + 8, "the holdout twice and the labelled pool, each stored by the service"
