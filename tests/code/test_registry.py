"""The MLflow registry on a real sqlite store: a model logged, registered and loaded back through every
kind of URI gives the same outputs; lineage, artifacts and refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from registry_helpers import (
    TINY_INPUT_PX,
    evaluation,
    register_tiny,
    save_tiny_model,
    store_from,
    tiny_lineage,
)

from dfguard.config import RegistryConfig
from dfguard.models import load_detector
from dfguard.registry import (
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    collect_lineage,
    current_aliases,
    get_version,
    list_versions,
    load,
    log_model_run,
    model_contract,
    model_digest,
    move_alias,
    register,
)


@pytest.fixture
def store(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[MlflowClient, Path]:
    client, cfg = store_from(template_db, tmp_path / "mlflow", monkeypatch)
    return client, Path(cfg.root)


def test_champion_loads_back_with_identical_outputs(
    store, model_dir: Path, tmp_path: Path, temp_root: Path
) -> None:
    client, _ = store
    version = register_tiny(client, model_dir, evaluation(0.9))
    move_alias(client, CHAMPION, version)
    original, _ = load_detector(model_dir)
    batch = torch.randn(3, 3, TINY_INPUT_PX, TINY_INPUT_PX, generator=torch.Generator().manual_seed(1))
    run_id = get_version(client, version).run_id
    uris = (f"models:/{MODEL_NAME}@champion", f"models:/{MODEL_NAME}/{version}", f"runs:/{run_id}/model")
    for index, uri in enumerate((*uris, str(model_dir))):
        folder = load(client, uri, tmp_path / "downloads" / str(index))
        loaded, config = load_detector(folder)
        with torch.no_grad():
            assert torch.equal(loaded(batch).logits, original(batch).logits), uri
        assert config["contract_hash"] == model_contract(model_dir)[1]
    # With no destination, the files go to a new temporary folder of the caller's.
    downloaded = load(client, f"models:/{MODEL_NAME}@champion")
    assert downloaded.is_relative_to(temp_root)
    assert sorted(p.name for p in downloaded.iterdir()) == ["config.json", "model.safetensors"]


def test_embedded_store_keeps_db_and_artifacts_under_its_root(store, model_dir: Path) -> None:
    client, root = store
    version = register_tiny(client, model_dir, evaluation(0.9))
    assert (root / "mlflow.db").is_file()
    experiment = client.get_experiment_by_name(RegistryConfig().experiment)
    assert experiment.artifact_location == (root / "artifacts").resolve().as_uri()
    run_dir = root / "artifacts" / get_version(client, version).run_id / "artifacts"
    stored = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert stored == [
        "contract.json",
        "metrics.json",
        "model/config.json",
        "model/model.safetensors",
        "resolved_config.json",
    ]


def _git_project(root: Path, faces_md5: str) -> Path:
    root.mkdir(parents=True)
    lock = {"schema": "2.0", "stages": {"extract": {"outs": [{"path": "data/faces", "md5": faces_md5}]}}}
    (root / "dvc.lock").write_text(json.dumps(lock))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "dvc.lock"], ["commit", "-q", "-m", "lock"]):
        subprocess.run([*git, *args], cwd=root, check=True)
    return root


def test_lineage_is_tagged_on_the_version_and_the_run(store, model_dir: Path, tmp_path: Path) -> None:
    client, _ = store
    project = _git_project(tmp_path / "project", "0123456789abcdef0123456789abcdef.dir")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout
    parent = client.create_run(client.get_experiment_by_name("dfguard").experiment_id).info.run_id
    lineage = collect_lineage(model_dir, root=project, parent_run_id=parent, flow_run_id="flow-42")
    assert not lineage.git_dirty
    (project / "new_module.py").write_text("")  # an uncommitted file: the commit no longer tells the code
    assert collect_lineage(model_dir, root=project).git_dirty

    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "roc.png").write_bytes(b"png")
    run_id = log_model_run(
        client,
        model_dir,
        params={"train": {"lr": 0.001, "epochs": 2}},
        resolved_config={"train": {"lr": 0.001}},
        metrics=evaluation(0.91, **{"FaceSwap": 0.93, "Face2Face (c23)": 0.88}),
        lineage=lineage,
        artifacts={"plots": plots},
    )
    version = register(client, run_id, lineage)

    contract, contract_hash = model_contract(model_dir)
    assert {k: v for k, v in version.tags.items() if k != "lineage.contract"} == {
        "lineage.dataset_hash": "0123456789abcdef0123456789abcdef.dir",
        "lineage.git_commit": commit.strip(),
        "lineage.git_dirty": "false",
        "lineage.contract_hash": contract_hash,
        "lineage.parent_run_id": parent,
        "lineage.flow_run_id": "flow-42",
    }
    assert json.loads(version.tags["lineage.contract"]) == contract
    run = client.get_run(run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.tags["lineage.contract_hash"] == contract_hash
    assert run.data.params == {"train.lr": "0.001", "train.epochs": "2"}
    assert run.data.metrics["video.auc"] == pytest.approx(0.91)
    assert run.data.metrics["by_method.Face2Face _c23_.auc"] == pytest.approx(0.88)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts == {"contract.json", "metrics.json", "model", "plots", "resolved_config.json"}
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/roc.png"]


def test_registering_makes_the_newest_version_the_challenger(store, model_dir: Path) -> None:
    client, _ = store
    assert list_versions(client) == [] and current_aliases(client) == {}
    first = register_tiny(client, model_dir, evaluation(0.9))
    second = register_tiny(client, model_dir, evaluation(0.92))
    assert [v.version for v in list_versions(client)] == [int(second), int(first)]
    assert current_aliases(client) == {CHALLENGER: second}
    assert str(get_version(client, CHALLENGER).version) == second


def test_pickles_and_contractless_models_are_refused(store, model_dir: Path, tmp_path: Path) -> None:
    client, _ = store
    pickled = tmp_path / "pickled"
    save_tiny_model(pickled)
    (pickled / "optimizer.pt").write_bytes(b"\x80\x04")
    with pytest.raises(ValueError, match=r"pickle files.*optimizer\.pt"):
        log_model_run(
            client, pickled, params={}, resolved_config={}, metrics={}, lineage=tiny_lineage(model_dir)
        )
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model.safetensors", "config.json"):
        (bare / name).write_bytes((model_dir / name).read_bytes())
    config = json.loads((bare / "config.json").read_text())
    del config["contract"]
    (bare / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no preprocessing contract"):
        collect_lineage(bare)
    assert client.search_runs([client.get_experiment_by_name("dfguard").experiment_id]) == []


def test_load_names_what_is_missing(store, tmp_path: Path) -> None:
    client, _ = store
    with pytest.raises(ValueError, match="champion"):
        load(client, f"models:/{MODEL_NAME}@champion")
    with pytest.raises(ValueError, match="expected models:/"):
        load(client, f"models:/{MODEL_NAME}/latest/extra")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load(client, tmp_path)


def test_a_failed_download_leaves_no_folder_behind(store, temp_root: Path) -> None:
    client, _ = store
    with pytest.raises(ValueError, match="cannot download"):
        load(client, "runs:/0123456789abcdef0123456789abcdef/model")
    assert list(temp_root.iterdir()) == []


def _edit_config(folder: Path, **sections: dict) -> None:
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    config_path.write_text(json.dumps(config, indent=2))


def test_digest_ignores_provenance_but_not_what_changes_outputs(model_dir: Path, tmp_path: Path) -> None:
    reference = model_digest(model_dir)
    retrained = tmp_path / "retrained"
    shutil.copytree(model_dir, retrained)
    _edit_config(retrained, training={"seconds": 999.0, "out_dir": "elsewhere"})
    assert model_digest(retrained) == reference, "wall time and paths made an identical model look new"

    recalibrated = tmp_path / "recalibrated"
    shutil.copytree(model_dir, recalibrated)
    _edit_config(recalibrated, calibration={"temperature": 2.5, "threshold": 0.4})
    assert model_digest(recalibrated) != reference

    other_weights = save_tiny_model(tmp_path / "other", seed=1)
    shutil.copyfile(model_dir / "config.json", other_weights / "config.json")
    assert model_digest(other_weights) != reference

    (retrained / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        model_digest(retrained)
