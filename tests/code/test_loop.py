"""The continual-learning loop on a tiny world through its real parts: a trained champion in a real
MLflow store, a real SQLite prediction store holding predictions the champion made on a kind of fake
it never saw (and gets wrong), labels of a (simulated) reviewer, the feedback dataset, the gate, a
replay fine-tune, re-calibration, both suites re-scored, the promotion gate and the aliases."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from model_helpers import train_tiny_detector
from registry_helpers import register_tiny

from dfguard.config import Config, EvaluateConfig, FeedbackConfig, LoopConfig, RegistryConfig
from dfguard.evaluation.run import run_evaluate
from dfguard.faces.table import read_contract, read_faces
from dfguard.feedback import PredictionRecord, open_store
from dfguard.inference.predictor import Predictor
from dfguard.loop.dataset import consensus_labels, export_feedback, holdout_split, read_summary
from dfguard.loop.gate import LoopInputs, loop_gate
from dfguard.loop.monitor import current_frame
from dfguard.loop.run import LoopBusyError, loop_checks, loop_lock, run_loop
from dfguard.registry import CHAMPION, PREVIOUS, configure, current_aliases, move_alias
from dfguard.review.reports import LOOP_RUN_TAG, loop_runs
from dfguard.transforms import to_batch
from pipelines.loop import loop_flow

CROP_PX = 48  # the tiny face dataset's crops (tests/conftest.py)
SIMULATED = "simulated-reviewer"


def _striped(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A face-ish blob like the training crops; the new kind of fake carries a fine stripe pattern
    over its middle instead of the colour-shifted patch the champion learnt."""
    base = cv2.GaussianBlur(rng.integers(60, 200, (CROP_PX, CROP_PX, 3), np.uint8), (0, 0), 3)
    if fake:
        stripes = np.zeros((20, 20, 3), np.int64)
        stripes[::2] = 45
        base[14:34, 14:34] = np.clip(base[14:34, 14:34].astype(np.int64) + stripes, 0, 255)
    return base


def _prediction(predictor: Predictor, crop: np.ndarray, version: str, at: datetime) -> PredictionRecord:
    """A photo's prediction as the service stores it: the champion's own score, features and crop."""
    scores = predictor.score_crops([crop])
    probability = float(1 / (1 + math.exp(-scores.logits[0])))
    verdict = "FAKE" if probability >= 0.6 else "REAL" if probability < 0.4 else "UNCERTAIN"
    return PredictionRecord(
        prediction_id=uuid.uuid4().hex,
        created_at=at,
        content_sha256=hashlib.sha256(crop.tobytes()).hexdigest(),
        media_kind="image",
        model_name="small_cnn",
        weights_sha256="",
        verdict=verdict,
        probability=probability,
        model_version=version,
        model_alias=CHAMPION,
        calibration="none",
        threshold=0.5,
        logit=float(scores.logits[0]),
        quality={
            "face_px": 120.0,
            "sharpness": 50.0,
            "brightness": 110.0,
            "jpeg_quality": None,
            "blockiness": 0.1,
        },
        features=[float(v) for v in scores.features[0]],
        faces=[
            {
                "frame_index": 0,
                "timestamp_s": 0.0,
                "track_id": 0,
                "box": [0, 0, 48, 48],
                "probability": probability,
            }
        ],
        frames=[{"frame_index": 0, "timestamp_s": 0.0, "status": "OK", "probability": probability}],
        crops=[crop],
    )


@dataclasses.dataclass
class World:
    cfg: Config
    client: object
    champion: str
    feedback: FeedbackConfig
    params: Path  # the same settings as a params file, for the flow


@pytest.fixture(scope="module")
def champion_model(tmp_path_factory, face_dataset) -> tuple[Path, Path]:
    """A small CNN that learnt the training fakes' colour-shifted patch well (no self-blends, no
    augmentation: a detector of that one cue), and so misses the striped kind."""
    return train_tiny_detector(
        tmp_path_factory.mktemp("champion"),
        face_dataset,
        epochs=4,
        batch_size=16,
        samples_per_epoch=256,
        sbi=False,
        augment=0.0,
    )


@pytest.fixture
def world(tmp_path, champion_model) -> World:
    faces_dir, model_dir = champion_model
    registry = RegistryConfig(root=str(tmp_path / "mlflow"))
    client = configure(registry)
    evaluate = EvaluateConfig(
        model_dir=str(model_dir),
        faces_dir=str(faces_dir),
        manifest_path="",
        split="test",
        out_dir=str(tmp_path / "champion-eval"),
    )
    metrics = run_evaluate(evaluate, progress=False).metrics
    champion = register_tiny(client, model_dir, metrics, dataset="unknown")
    move_alias(client, CHAMPION, champion)
    cfg = Config()
    cfg.registry = registry
    cfg.feedback = FeedbackConfig(root=str(tmp_path / "feedback"))
    cfg.train = dataclasses.replace(cfg.train, faces_dir=str(faces_dir))
    cfg.evaluate = dataclasses.replace(evaluate, out_dir=str(tmp_path / "evaluate"))
    cfg.calibrate = dataclasses.replace(cfg.calibrate, target_precision=0.9, max_uncertain_fraction=0.5)
    # Tiny data: 6 test videos cannot show an ECE under 0.1, and calibration is not what is tested.
    cfg.promotion = dataclasses.replace(cfg.promotion, max_ece=1.0)
    cfg.loop = LoopConfig(
        dataset_dir=str(tmp_path / "feedback-faces"),
        work_dir=str(tmp_path / "loop"),
        drift_dir=str(tmp_path / "drift"),
        min_new_labels=10,
        min_errors=3,
        lr=3e-3,  # a from-scratch small CNN, not a pretrained backbone: it needs a larger step
        epochs=3,
        samples_per_epoch=64,
        drift_window_days=0.01,  # the predictions are 2 hours old: no drift report (tested on its own)
    )
    predictor = Predictor(model_dir)
    rng = np.random.default_rng(5)
    start = datetime.now(UTC) - timedelta(hours=2)
    with open_store(cfg.feedback) as store:
        for i in range(40):
            fake = i % 2 == 1
            record = _prediction(predictor, _striped(rng, fake), champion, start + timedelta(minutes=i))
            store.record(record)
            store.add_label(record.prediction_id, "fake" if fake else "real", SIMULATED, note="simulated")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(cfg)))))
    return World(cfg, client, champion, cfg.feedback, params)


def test_the_gate_waits_recalibrates_or_fine_tunes_from_its_inputs() -> None:
    policy = LoopConfig(min_new_labels=20, min_errors=5, ece_rise=0.05)
    few = loop_gate(LoopInputs(5, 5, 0.3, 0.05, True), policy)
    assert few.action == "wait" and "5 new labels" in few.reasons[0]
    assert loop_gate(LoopInputs(30, 6, 0.05, 0.05, False), policy).action == "finetune"
    assert loop_gate(LoopInputs(30, 0, 0.05, 0.05, True), policy).action == "finetune"
    rising = loop_gate(LoopInputs(30, 1, 0.2, 0.05, False), policy)
    assert rising.action == "recalibrate" and "re-calibrate" in rising.reasons[-1]
    steady = loop_gate(LoopInputs(30, 1, 0.07, 0.05, False), policy)
    assert steady.action == "wait" and "within 0.05" in steady.reasons[-1]
    assert loop_gate(LoopInputs(30, 1, math.nan, 0.05, None), policy).action == "wait"


def test_consensus_leaves_out_unsure_and_disagreements() -> None:
    at = pd.Timestamp("2026-12-01", tz="UTC")
    labels = pd.DataFrame(
        [
            ("a", "fake", "ann", "face_swap"),
            ("a", "fake", "bob", None),
            ("b", "real", "ann", None),
            ("b", "fake", "bob", None),
            ("c", "unsure", "ann", None),
            ("d", "unsure", "ann", None),
            ("d", "real", "bob", None),
        ],
        columns=["prediction_id", "label", "reviewer", "manipulation"],
    ).assign(created_at=at)
    outcome = consensus_labels(labels).set_index("prediction_id")
    assert outcome["outcome"].to_dict() == {"a": "fake", "b": "disagreement", "c": "unsure", "d": "real"}
    assert outcome.loc["a", "reviewers"] == "ann,bob" and outcome.loc["a", "manipulation"] == "face_swap"


def test_the_holdout_split_is_fixed_by_content() -> None:
    hashes = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    splits = [holdout_split(h, 0.3) for h in hashes]
    assert splits == [holdout_split(h, 0.3) for h in hashes]
    assert 0.25 < splits.count("test") / len(splits) < 0.35


def test_export_writes_a_face_dataset_with_provenance(world) -> None:
    with open_store(world.feedback) as store:
        ids = store.predictions()["prediction_id"].tolist()
        store.add_label(ids[0], "unsure", "bob")  # still in: the other reviewer decided
        store.add_label(ids[2], "fake", "bob")  # the simulated reviewer said real: a disagreement
        summary = export_feedback(
            store, world.cfg.loop.dataset_dir, read_contract(world.cfg.train.faces_dir), 0.3
        )
    assert summary.items == 39 and summary.disagreements == 1 and summary.unsure == 0
    assert set(summary.by_split) == {"train", "test"} and sum(summary.by_split.values()) == 39
    faces = read_faces(world.cfg.loop.dataset_dir)
    assert ids[2] not in set(faces["video_id"])
    assert (faces.groupby("video_id")["split"].nunique() == 1).all()
    assert set(faces["reviewers"]) == {SIMULATED}  # bob's unsure decides nothing
    assert {"prediction_id", "model_version", "predicted_at", "labelled_at"} <= set(faces.columns)
    assert all((Path(world.cfg.loop.dataset_dir) / crop).is_file() for crop in faces["crop"])
    assert read_contract(world.cfg.loop.dataset_dir).hash == read_contract(world.cfg.train.faces_dir).hash
    assert read_summary(world.cfg.loop.dataset_dir) == summary


def test_labels_on_a_missed_kind_of_fake_end_in_a_champion_that_gets_it_right(world) -> None:
    cfg = dataclasses.replace(world.cfg, loop=dataclasses.replace(world.cfg.loop, drift_window_days=1.0))
    with open_store(world.feedback) as store:
        result = run_loop(cfg, store, world.client)
    # The striped fakes the champion never saw moved its embeddings: the report says so, on disk.
    assert result.drift is not None and Path(result.drift["html_path"]).is_file()
    assert result.drift["current_rows"] == 40 and result.decision.inputs.drifted == result.drift["drifted"]
    assert result.decision.action == "finetune", result.decision.reasons
    assert result.decision.inputs.errors >= world.cfg.loop.min_errors
    holdout = result.scores["holdout"]
    # The striped fakes of the holdout, never trained on, are caught now; the reals' verdicts the
    # expert leaves alone, so accuracy rises by the fakes it catches.
    assert holdout["challenger"]["fake_recall"] >= max(0.8, holdout["champion"]["fake_recall"] + 0.3), holdout
    assert holdout["challenger"]["accuracy"] > holdout["champion"]["accuracy"], holdout
    assert result.promoted, result.checks
    aliases = current_aliases(world.client)
    assert aliases[CHAMPION] == result.challenger and aliases[PREVIOUS] == world.champion
    frozen = result.scores["frozen"]
    assert frozen["champion"]["auc"] - frozen["challenger"]["auc"] <= world.cfg.loop.max_forgetting
    runs = loop_runs(world.client, world.cfg.registry.experiment)
    assert runs.iloc[0]["decision"] == "finetune"
    logged = world.client.list_artifacts(runs.iloc[0]["run_id"], "drift")
    assert {Path(a.path).suffix for a in logged} == {".html", ".json"}
    # The labels were used: the next run sees none new and waits.
    with open_store(world.feedback) as store:
        again = run_loop(world.cfg, store, world.client)
    assert again.decision.action == "wait" and again.challenger is None
    assert loop_runs(world.client, world.cfg.registry.experiment).iloc[0]["decision"] == "wait"


def test_a_challenger_that_does_not_clear_the_loop_checks_is_refused_with_the_reason(
    world, prefect_server
) -> None:
    params = yaml.safe_load(world.params.read_text())
    params["loop"]["min_holdout_gain"] = 1.0  # no challenger can gain that much
    world.params.write_text(yaml.safe_dump(params))
    with loop_lock(world.cfg.loop.work_dir):  # a second trigger while a run holds the lock
        refused = loop_flow(action="recalibrate", params_path=str(world.params))
    assert "already running" in refused["refused"]
    result = loop_flow(action="recalibrate", params_path=str(world.params))
    assert result["challenger"] is not None and not result["promoted"]
    failed = [check for check in result["checks"] if not check["passed"]]
    assert [check["name"] for check in failed] == ["feedback holdout"], failed
    assert failed[0]["figures"]["gain"] <= 1.0
    assert current_aliases(world.client)[CHAMPION] == world.champion
    tags = world.client.get_model_version("dfguard-detector", result["challenger"]).tags
    assert tags["loop.parent_version"] == world.champion and "fail: feedback holdout" in tags["loop.checks"]
    run = world.client.get_run(result["run_id"])
    assert run.data.tags[LOOP_RUN_TAG] == "recalibrate"
    assert "chosen by an engineer" in run.data.tags["dfguard.loop.reasons"]
    assert run.data.tags["dfguard.flow_run_id"]  # a real Prefect flow run made it


def test_forgetting_fails_the_loop_checks() -> None:
    cfg = Config()
    scores = {
        "frozen": {"champion": {"auc": 0.95, "ece": 0.05}, "challenger": {"auc": 0.90, "ece": 0.05}},
        "holdout": {
            "champion": {"auc": 0.5, "accuracy": 0.5, "n": 10},
            "challenger": {"auc": 0.9, "accuracy": 0.9, "n": 10},
        },
    }
    checks = {check.name: check for check in loop_checks(scores, cfg)}
    assert not checks["forgetting"].passed
    assert checks["forgetting"].reason.startswith(
        "frozen suite video AUC 0.9000 vs champion 0.9500 (forgetting +0.0500"
    )
    assert checks["feedback holdout"].passed and checks["feedback holdout"].figures["gain"] == pytest.approx(
        0.4
    )


def test_a_person_whose_reals_are_called_fake_more_often_fails_the_checks_by_name() -> None:
    cfg = Config()
    persons = {"ada": {"videos": 0.0, "photos": 0.02}, "bo": {"videos": 1 / 6, "photos": 0.05}}
    frozen = {
        "champion": {"auc": 0.9, "ece": 0.05, "persons": persons},
        "challenger": {
            "auc": 0.9,
            "ece": 0.05,
            "persons": {"ada": {"videos": 0.0, "photos": 0.03}, "bo": {"videos": 0.5, "photos": 0.40}},
        },
    }
    holdout = {"champion": {"accuracy": 0.5, "n": 10}, "challenger": {"accuracy": 0.9, "n": 10}}
    checks = {check.name: check for check in loop_checks({"frozen": frozen, "holdout": holdout}, cfg)}
    person = checks["per person"]
    assert not person.passed and checks["forgetting"].passed
    assert person.figures["flagged"] == ["bo (photos)", "bo (videos)"]
    assert "more often for bo (photos), bo (videos)" in person.reason
    # The same rise within the allowed share passes.
    loose = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, max_person_fp_rise=0.4))
    assert {c.name: c for c in loop_checks({"frozen": frozen, "holdout": holdout}, loose)}[
        "per person"
    ].passed


def test_one_loop_run_at_a_time(tmp_path) -> None:
    with loop_lock(tmp_path), pytest.raises(LoopBusyError, match="already running"), loop_lock(tmp_path):
        pass
    with loop_lock(tmp_path):  # released: the next run goes ahead
        pass


def test_the_drift_window_holds_the_champions_own_predictions(world, champion_model) -> None:
    _, model_dir = champion_model
    other = dataclasses.replace(
        _prediction(Predictor(model_dir), _striped(np.random.default_rng(9), True), "99", datetime.now(UTC)),
        features=[0.0, 1.0],  # another model's embedding space
    )
    with open_store(world.feedback) as store:
        store.record(other)
        mine = current_frame(store, window_days=1.0, model_version=world.champion)
        with pytest.raises(ValueError, match="embeddings of 2 sizes"):
            current_frame(store, window_days=1.0, last=100)  # two models' spaces do not compare
    assert len(mine) == 40 and mine.filter(like="emb_").notna().all().all()


def test_a_loop_killed_mid_fine_tune_leaves_things_consistent_and_the_next_run_completes(world) -> None:
    # The loop, in a process of its own, killed (SIGKILL: no clean-up runs) after its fine-tune's
    # first epoch was checkpointed (the replay fine-tune design: the one that trains in epochs).
    script = (
        "import dataclasses, os, signal\nfrom pathlib import Path\n"
        "import dfguard.loop.run as loop_run\nfrom dfguard.config import load_config\n"
        "from dfguard.feedback import open_store\nfrom dfguard.registry import configure\n"
        "from dfguard.training.run import train_detector\n"
        "def dying(cfg, progress=False):\n"
        "    kill = lambda record, model: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return train_detector(cfg, progress, on_epoch_end=kill)\n"
        "loop_run.train_detector = dying\n"
        f"cfg = load_config(Path({str(world.params)!r}))\n"
        "cfg = dataclasses.replace(cfg, loop=dataclasses.replace(cfg.loop, learn='finetune'))\n"
        "with open_store(cfg.feedback) as store:\n"
        "    loop_run.run_loop(cfg, store, configure(cfg.registry), 'finetune')\n"
    )
    before = current_aliases(world.client)
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert current_aliases(world.client) == before, "no alias moved"
    summary = read_summary(world.cfg.loop.dataset_dir)  # the feedback dataset was written whole
    faces = read_faces(world.cfg.loop.dataset_dir)
    assert summary.items == faces["video_id"].nunique() == 40
    assert all((Path(world.cfg.loop.dataset_dir) / crop).is_file() for crop in faces["crop"])
    with loop_lock(world.cfg.loop.work_dir):  # the dead run's lock went with it
        pass
    finetune = dataclasses.replace(world.cfg, loop=dataclasses.replace(world.cfg.loop, learn="finetune"))
    with open_store(world.feedback) as store:
        result = run_loop(finetune, store, world.client, "finetune")
    assert result.challenger is not None and result.promoted, result.checks
    assert current_aliases(world.client)[CHAMPION] == result.challenger


def _dotted(rng: np.random.Generator, fake: bool) -> np.ndarray:
    """A second kind of fake the champion never saw: a grid of bright dots over the face's lower half."""
    base = cv2.GaussianBlur(rng.integers(60, 200, (CROP_PX, CROP_PX, 3), np.uint8), (0, 0), 3)
    if fake:
        base[26:44:3, 8:40:3] = 250
    return base


def test_a_second_round_adds_to_the_first_and_rollback_returns_the_first_whole(world) -> None:
    from dfguard.loop.experts import composition_of
    from dfguard.models import load_detector
    from dfguard.promotion import rollback
    from dfguard.registry import MODEL_NAME, load

    with open_store(world.feedback) as store:
        first = run_loop(world.cfg, store, world.client, "finetune")
    assert first.promoted, [check.line for check in first.checks]
    # Reviewers meet a second new kind and label it; the loop learns it in a round of its own.
    predictor = Predictor(champion_model_dir(world))
    rng = np.random.default_rng(11)
    start = datetime.now(UTC) - timedelta(minutes=30)
    with open_store(world.feedback) as store:
        for i in range(30):
            fake = i % 2 == 1
            record = _prediction(
                predictor, _dotted(rng, fake), first.challenger, start + timedelta(seconds=i)
            )
            store.record(record)
            store.add_label(record.prediction_id, "fake" if fake else "real", SIMULATED, note="simulated")
        # What round two gains is not the point here (round one's expert already catches these blobs'
        # dots): the gain check is relaxed so that its composition is promoted and can be compared.
        relaxed = dataclasses.replace(
            world.cfg, loop=dataclasses.replace(world.cfg.loop, min_holdout_gain=-1.0)
        )
        second = run_loop(relaxed, store, world.client, "finetune")
    assert second.challenger and second.promoted, [check.line for check in second.checks if not check.passed]

    def folder(version: str) -> Path:
        return load(
            world.client, f"models:/{MODEL_NAME}/{version}", world.cfg.loop.work_dir + f"/check-{version}"
        )

    one, _ = load_detector(folder(first.challenger))
    two, _ = load_detector(folder(second.challenger))
    assert (one.experts, two.experts) == (1, 2)
    assert torch.equal(two.expert_weight[0], one.expert_weight[0])  # round one's expert untouched
    assert all(torch.equal(two.base.state_dict()[k], v) for k, v in one.base.state_dict().items())
    rounds = composition_of(folder(second.challenger))
    assert [r["parent_version"] for r in rounds] == [world.champion, first.challenger]
    # The dotted kind is caught by the second composition, and the striped kind still is.
    crops = [_dotted(rng, True) for _ in range(6)] + [_striped(rng, True) for _ in range(6)]
    with torch.inference_mode():
        logits = two(to_batch(crops, two.preset)).logits
    assert bool((logits > 0).all()), logits

    aliases = rollback(world.client)
    assert aliases[CHAMPION] == first.challenger
    restored, _ = load_detector(folder(aliases[CHAMPION]))
    assert restored.experts == 1 and torch.equal(restored.expert_weight[0], one.expert_weight[0])


def champion_model_dir(world: World) -> Path:
    """The world's champion model folder (its registered files, downloaded)."""
    from dfguard.registry import MODEL_NAME, load

    return load(world.client, f"models:/{MODEL_NAME}/{world.champion}", world.cfg.loop.work_dir + "/original")


def test_photo_feedback_leaves_the_video_calibration_as_it_was(world, champion_model, tmp_path) -> None:
    from dfguard.calibration.stage import run_calibrate
    from dfguard.config import CalibrateConfig
    from dfguard.loop.run import recalibrate_per_kind

    faces_dir, model_dir = champion_model
    calibrated = tmp_path / "calibrated"
    run_calibrate(
        CalibrateConfig(
            model_dir=str(model_dir),
            faces_dir=str(faces_dir),
            out_dir=str(calibrated),
            report_dir=str(tmp_path / "report"),
            max_uncertain_fraction=0.5,
        ),
        progress=False,
    )
    with open_store(world.feedback) as store:
        export_feedback(store, world.cfg.loop.dataset_dir, read_contract(faces_dir), 0.3)
    out = tmp_path / "challenger"
    recalibrate_per_kind(calibrated, calibrated, faces_dir, world.cfg.loop.dataset_dir, out, world.cfg, False)
    before = json.loads((calibrated / "config.json").read_text())
    after = json.loads((out / "config.json").read_text())
    assert read_faces(world.cfg.loop.dataset_dir)["media_kind"].eq("image").all()  # photos only
    assert after["calibration"] == before["calibration"]  # the videos' calibration did not move
    assert after["photo_calibration"] != before["photo_calibration"]  # the photos' was re-fitted
    assert after["photo_calibration"]["n_validation"] > before["photo_calibration"]["n_validation"]


def test_a_composition_that_would_call_real_people_fake_is_refused_naming_them(world) -> None:
    # An expert told it may fire on most real faces (a threshold no real reviewer would accept) does:
    # the frozen suite's real clips are then called FAKE, and the per-person check refuses it by name.
    reckless = dataclasses.replace(
        world.cfg, loop=dataclasses.replace(world.cfg.loop, expert_real_fire=0.95, expert_person_fire=0.95)
    )
    with open_store(world.feedback) as store:
        result = run_loop(reckless, store, world.client, "finetune")
    assert result.challenger is not None and not result.promoted
    failed = {check.name: check for check in result.checks if not check.passed}
    assert "per person" in failed, [check.line for check in result.checks]
    assert failed["per person"].figures["flagged"] and "more often for" in failed["per person"].reason
    assert current_aliases(world.client)[CHAMPION] == world.champion  # clients keep the champion
