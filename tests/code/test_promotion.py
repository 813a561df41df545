"""The promotion gate as a pure function, and promotion/rollback on a real sqlite registry: aliases move
as the roles say, verdicts are tagged, and a failure half-way leaves the aliases as they were."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow import MlflowClient
from registry_helpers import evaluation, register_tiny, store_from

from dfguard.config import PromotionConfig, RegistryConfig
from dfguard.promotion import GatePolicy, gate_metrics, loadable, promote, promotion_gate, rollback
from dfguard.registry import (
    CHALLENGER,
    CHAMPION,
    METRICS_ARTIFACT,
    PREVIOUS,
    champion_to_rescore,
    current_aliases,
    get_version,
)

POLICY = GatePolicy(auc_tolerance=0.005, method_tolerance=0.02, max_ece=0.1)
EXPERIMENT = RegistryConfig.experiment


def _failed(reasons: tuple[str, ...]) -> list[str]:
    return [reason for reason in reasons if reason.startswith("fail")]


def test_gate_policy_is_the_promotion_config() -> None:
    assert GatePolicy is PromotionConfig


def test_first_model_promotes_itself_once_evaluated() -> None:
    result = promotion_gate(evaluation(0.7), None, POLICY)
    assert result.passed
    assert any("no champion yet" in reason for reason in result.reasons)
    over_bound = promotion_gate(evaluation(0.7, ece=0.3), None, POLICY)
    assert over_bound.passed and any("reported only" in reason for reason in over_bound.reasons)
    unevaluated = promotion_gate({}, None, POLICY)
    assert not unevaluated.passed, "a model without a video AUC was never evaluated"


def test_better_or_slightly_worse_challenger_passes() -> None:
    assert promotion_gate(evaluation(0.93), evaluation(0.90), POLICY).passed
    # exactly the tolerance below the champion still passes (0.9 - 0.895 is not 0.005 in binary)
    result = promotion_gate(evaluation(0.895, FaceSwap=0.88), evaluation(0.90, FaceSwap=0.90), POLICY)
    assert result.passed, result.reasons
    assert len(result.reasons) == 3  # ECE, video AUC, FaceSwap AUC


def test_video_auc_regression_fails() -> None:
    result = promotion_gate(evaluation(0.89), evaluation(0.90), POLICY)
    assert not result.passed
    assert len(_failed(result.reasons)) == 1
    assert "video AUC 0.8900 vs champion 0.9000" in _failed(result.reasons)[0]


def test_one_method_regressing_fails_even_when_video_auc_improves() -> None:
    challenger = evaluation(0.95, FaceSwap=0.97, SelfBlend=0.85, NeuralTextures=0.6)
    champion = evaluation(0.90, FaceSwap=0.90, SelfBlend=0.90)
    result = promotion_gate(challenger, champion, POLICY)
    assert not result.passed
    assert [reason.split(" ")[1] for reason in _failed(result.reasons)] == ["SelfBlend"]
    assert any("NeuralTextures AUC 0.6000: new method" in reason for reason in result.reasons)


def test_a_method_the_challenger_was_not_evaluated_on_fails() -> None:
    result = promotion_gate(
        evaluation(0.95, FaceSwap=0.95), evaluation(0.9, FaceSwap=0.9, SelfBlend=0.9), POLICY
    )
    assert _failed(result.reasons) == ["fail: SelfBlend AUC is missing (champion 0.9000)"]


def test_ece_over_the_bound_fails_against_a_champion() -> None:
    result = promotion_gate(evaluation(0.95, ece=0.12), evaluation(0.8), POLICY)
    assert _failed(result.reasons) == ["fail: video ECE 0.1200 (max 0.1000)"]


def test_the_ece_bound_widens_to_what_chance_gives_a_calibrated_model_on_few_videos() -> None:
    few = {**evaluation(0.95, ece=0.14), "ece_if_calibrated": {"mean": 0.12, "high": 0.16}}
    result = promotion_gate(few, evaluation(0.8), POLICY)
    assert result.passed and any("or 0.1600: what a perfectly calibrated" in r for r in result.reasons)
    worse = {**evaluation(0.95, ece=0.2), "ece_if_calibrated": {"mean": 0.12, "high": 0.16}}
    assert not promotion_gate(worse, evaluation(0.8), POLICY).passed
    many = {**evaluation(0.95, ece=0.12), "ece_if_calibrated": {"mean": 0.02, "high": 0.03}}
    assert _failed(promotion_gate(many, evaluation(0.8), POLICY).reasons) == [
        "fail: video ECE 0.1200 (max 0.1000)"
    ]


def test_metrics_in_another_layout_fail_instead_of_passing() -> None:
    flat = {"video_auc": 0.99, "ece": 0.01}
    assert math.isnan(gate_metrics(flat).video_auc)
    result = promotion_gate(flat, None, POLICY)
    assert not result.passed and len(_failed(result.reasons)) == 1  # no video AUC
    against_champion = promotion_gate(flat, evaluation(0.8), POLICY)
    assert len(_failed(against_champion.reasons)) == 4  # no ECE, no video AUC, no per-method AUCs


def test_metrics_of_two_face_datasets_do_not_compare() -> None:
    result = promotion_gate(evaluation(0.99), evaluation(0.8), POLICY, datasets=("aaa.dir", "bbb.dir"))
    assert not result.passed
    assert _failed(result.reasons) == [
        "fail: the challenger was measured on face dataset aaa.dir, the champion on bbb.dir: re-score the "
        "champion on the challenger's dataset first (the evaluate flow)"
    ]
    same = promotion_gate(evaluation(0.99), evaluation(0.8), POLICY, datasets=("aaa.dir", "aaa.dir"))
    assert same.passed and "pass: both measured on face dataset aaa.dir" in same.reasons


@pytest.fixture
def client(template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    return store_from(template_db, tmp_path / "mlflow", monkeypatch)[0]


def test_promotions_move_champion_and_previous(client: MlflowClient, model_dir: Path) -> None:
    first = register_tiny(client, model_dir, evaluation(0.90))
    outcome = promote(client, first, POLICY, verify=loadable(client))
    assert outcome.promoted and outcome.aliases == {CHAMPION: first}  # the challenger alias is used up
    tags = get_version(client, first).tags
    assert tags["gate.passed"] == "true" and tags["gate.champion"] == "none" and "promoted_at" in tags

    second = register_tiny(client, model_dir, evaluation(0.92))
    outcome = promote(client, CHALLENGER, POLICY, verify=loadable(client))
    assert outcome.version == second
    assert current_aliases(client) == {CHAMPION: second, PREVIOUS: first}
    assert get_version(client, second).tags["gate.champion"] == first

    third = register_tiny(client, model_dir, evaluation(0.95))
    promote(client, third, POLICY)
    assert current_aliases(client) == {CHAMPION: third, PREVIOUS: second}


def test_a_failing_gate_changes_no_alias_unless_forced(client: MlflowClient, model_dir: Path) -> None:
    champion = register_tiny(client, model_dir, evaluation(0.90))
    promote(client, champion, POLICY)
    worse = register_tiny(client, model_dir, evaluation(0.80))
    outcome = promote(client, worse, POLICY)
    assert not outcome.promoted
    assert current_aliases(client) == {CHAMPION: champion, CHALLENGER: worse}
    tags = get_version(client, worse).tags
    assert tags["gate.passed"] == "false" and tags["gate.forced"] == "false"
    assert "fail: video AUC 0.8000 vs champion 0.9000" in tags["gate.reasons"]

    assert promote(client, worse, POLICY, force=True).promoted
    assert current_aliases(client) == {CHAMPION: worse, PREVIOUS: champion}
    assert get_version(client, worse).tags["gate.forced"] == "true"
    with pytest.raises(ValueError, match="already the champion"):
        promote(client, worse, POLICY)


def test_rollback_swaps_champion_and_previous(client: MlflowClient, model_dir: Path) -> None:
    with pytest.raises(ValueError, match="no previous champion"):
        rollback(client)
    first = register_tiny(client, model_dir, evaluation(0.90))
    promote(client, first, POLICY)
    with pytest.raises(ValueError, match="no previous champion"):
        rollback(client)
    second = register_tiny(client, model_dir, evaluation(0.91))
    promote(client, second, POLICY)
    assert rollback(client, verify=loadable(client)) == {CHAMPION: first, PREVIOUS: second}
    assert "rolled_back_at" in get_version(client, second).tags
    assert rollback(client) == {CHAMPION: second, PREVIOUS: first}


def test_a_champion_that_cannot_load_is_not_promoted(client: MlflowClient, model_dir: Path) -> None:
    old = register_tiny(client, model_dir, evaluation(0.90))
    promote(client, old, POLICY)
    broken = register_tiny(client, model_dir, evaluation(0.95))
    # Its weights lost from the artifact store after registration: the gate passes, loading fails.
    weights = Path(
        client.get_run(get_version(client, broken).run_id).info.artifact_uri.removeprefix("file://")
    )
    (weights / "model" / "model.safetensors").unlink()
    before = current_aliases(client)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        promote(client, broken, POLICY, verify=loadable(client))
    assert current_aliases(client) == before == {CHAMPION: old, CHALLENGER: broken}
    assert "promoted_at" not in get_version(client, broken).tags


def test_a_failure_half_way_through_rollback_or_promote_restores_every_alias(
    client: MlflowClient, model_dir: Path
) -> None:
    first = register_tiny(client, model_dir, evaluation(0.90))
    promote(client, first, POLICY)
    second = register_tiny(client, model_dir, evaluation(0.91))
    promote(client, second, POLICY)
    third = register_tiny(client, model_dir, evaluation(0.50))  # waits as the challenger
    before = current_aliases(client)
    assert before == {CHAMPION: second, PREVIOUS: first, CHALLENGER: third}
    seen = []

    def smoke_test(version: str) -> None:
        seen.append((version, current_aliases(client)))
        raise RuntimeError("smoke test failed")

    with pytest.raises(RuntimeError, match="smoke test failed"):
        rollback(client, verify=smoke_test)
    assert seen == [(first, {CHAMPION: first, PREVIOUS: second, CHALLENGER: third})]  # it had moved
    assert current_aliases(client) == before
    with pytest.raises(RuntimeError, match="smoke test failed"):
        promote(client, third, POLICY, force=True, verify=smoke_test)
    assert seen[1] == (third, {CHAMPION: third, PREVIOUS: second})  # moved, challenger used up
    assert current_aliases(client) == before
    assert "promoted_at" not in get_version(client, third).tags


def test_a_champion_of_another_dataset_is_compared_once_rescored(
    client: MlflowClient, model_dir: Path
) -> None:
    champion = register_tiny(client, model_dir, evaluation(0.95), dataset="old.dir")
    promote(client, champion, POLICY)
    challenger = register_tiny(client, model_dir, evaluation(0.90), dataset="new.dir")
    assert champion_to_rescore(client, challenger, EXPERIMENT) == champion

    refused = promote(client, challenger, POLICY)
    assert not refused.promoted
    assert any("re-score the champion" in reason for reason in _failed(refused.gate.reasons))

    # The champion re-scored on the new dataset, as `registry.evaluate_model` records it: on the new
    # (harder) test split it does worse than the challenger, which now passes.
    run = client.create_run(
        client.get_experiment_by_name(EXPERIMENT).experiment_id,
        tags={
            "dfguard.kind": "evaluation",
            "dfguard.model_version": champion,
            "dfguard.dataset_hash": "new.dir",
            "dfguard.split": "test",
        },
    )
    client.log_dict(run.info.run_id, evaluation(0.85), METRICS_ARTIFACT)
    client.set_terminated(run.info.run_id)
    assert champion_to_rescore(client, challenger, EXPERIMENT) is None
    promoted = promote(client, challenger, POLICY)
    assert promoted.promoted, promoted.gate.reasons
    assert "pass: both measured on face dataset new.dir" in promoted.gate.reasons
    assert (
        "pass: video AUC 0.9000 vs champion 0.8500 (change +0.0500, tolerance 0.0050)"
        in promoted.gate.reasons
    )
