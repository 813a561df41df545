"""The `evaluate` flow: a real Prefect flow run that evaluates a registered model and logs the metrics to
MLflow, without leaving the model's download behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from registry_helpers import evaluation, register_tiny, store_from

from dfguard.registry import CHAMPION, MODEL_NAME, evaluation_on
from dfguard.registry.aliases import move_alias

REPO = Path(__file__).resolve().parents[2]


def test_flow_evaluates_the_champion_and_logs_the_run(
    prefect_server: None,
    trained_detector: tuple[Path, Path],
    template_db: Path,
    temp_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines.evaluate import evaluate_flow

    faces_dir, model_dir = trained_detector
    client, registry_cfg = store_from(template_db, tmp_path / "store", monkeypatch)
    move_alias(client, CHAMPION, register_tiny(client, model_dir, evaluation(0.9)))
    settings = yaml.safe_load((REPO / "params.yaml").read_text())
    settings["registry"] = {**settings["registry"], "root": registry_cfg.root}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(settings))
    monkeypatch.chdir(tmp_path)  # the flow writes its report under ./reports/evaluations

    uri = f"models:/{MODEL_NAME}@{CHAMPION}"
    result = evaluate_flow(model_uri=uri, faces_dir=str(faces_dir), split="test", params_path=str(params))

    metrics = json.loads((tmp_path / result["out_dir"] / "metrics.json").read_text())
    assert result["video_auc"] == metrics["video"]["auc"]
    run = client.get_run(result["run_id"])
    assert run.data.tags["dfguard.kind"] == "evaluation"
    assert run.data.tags["dfguard.model_uri"] == uri
    assert run.data.metrics["video.auc"] == pytest.approx(metrics["video"]["auc"])
    assert run.data.metrics["video.n"] == metrics["video"]["n"] > 0
    # The promotion gate finds this evaluation: the champion was re-scored on this face dataset.
    champion = run.data.tags["dfguard.model_version"]
    rescored = evaluation_on(client, champion, run.data.tags["dfguard.dataset_hash"], registry_cfg.experiment)
    assert rescored == metrics
    assert list(temp_root.glob("dfguard-model-*")) == [], "the flow left the model's download behind"
