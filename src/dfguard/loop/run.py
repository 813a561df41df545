"""One run of the continual-learning loop, from the store's labels to a promoted (or refused) challenger:

    export the feedback dataset -> drift report -> loop gate: wait | re-calibrate | learn ("finetune")
    -> challenger scored beside the champion on the frozen test suite and the feedback holdout
    -> the loop's checks (forgetting, per person, calibration per media kind, holdout gain)
    -> registered -> promotion gate

A round that learns adds an expert to the champion's composition (`loop.learn: expert`,
`loop/experts.py`) and keeps the champion's parts and calibrations as they are; `loop.learn:
finetune` refits the head with replay instead (the earlier design, kept for comparison).

Every run, whatever it decides, is an MLflow run tagged `dfguard.loop` with its inputs, decision,
figures and drift report, which the dashboard's drift page lists. One run at a time: a file lock in
`loop.work_dir`; a second run is refused with the holder's start time, never queued behind a lock it
cannot see the end of. A run killed half-way leaves the aliases as they were (promotion moves them
all-or-nothing) and its work folder is rebuilt by the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from dfguard.config import Config, EvaluateConfig
from dfguard.faces.contract import PreprocessingContract
from dfguard.feedback import PredictionStore
from dfguard.loop.dataset import HOLDOUT, ExportSummary, consensus_labels, export_feedback
from dfguard.loop.experts import learn_round
from dfguard.loop.finetune import build_loop_datasets, fine_tune_config, recalibrate
from dfguard.loop.gate import ACTIONS, Action, LoopDecision, LoopInputs, loop_gate
from dfguard.metrics import expected_calibration_error, roc_auc
from dfguard.models.io import CONFIG_NAME
from dfguard.promotion import Check, ece_check, loadable, promote
from dfguard.registry import (
    CHAMPION,
    MODEL_NAME,
    current_aliases,
    get_version,
    load,
    register_challenger,
    version_metrics,
)
from dfguard.registry.runs import flatten, log_metrics
from dfguard.registry.store import experiment_id
from dfguard.review.reports import LOOP_RUN_TAG, loop_runs
from dfguard.servers import AlreadyRunningError, single_instance
from dfguard.training.run import train_detector

log = logging.getLogger(__name__)

LOCK_NAME = "loop.lock"
ACTING = ("finetune", "recalibrate")  # decisions that change a model; "wait" leaves the labels counted
MIN_ECE_ITEMS = 10  # fewer labelled items give an ECE that says nothing
MIN_DRIFT_ROWS = 30  # a window of fewer predictions is not compared with the reference


class LoopBusyError(AlreadyRunningError):
    """Another loop run holds the lock."""


@dataclass(frozen=True)
class LoopResult:
    run_id: str
    decision: LoopDecision
    dataset: ExportSummary
    drift: dict[str, Any] | None
    challenger: str | None = None  # the registered version, when a model was made
    promoted: bool = False
    checks: tuple[Check, ...] = ()  # the loop's own checks, then the promotion gate's
    scores: dict[str, Any] = field(default_factory=dict)  # {suite: {champion|challenger: figures}}
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "decision": self.decision.to_dict(),
            "dataset": self.dataset.to_dict(),
            "drift": self.drift,
            "challenger": self.challenger,
            "promoted": self.promoted,
            "checks": [check.to_dict() for check in self.checks],
            "scores": self.scores,
            "seconds": self.seconds,
        }


@contextmanager
def loop_lock(work_dir: str | Path) -> Iterator[None]:
    """Hold the loop's lock (`servers.single_instance`), or raise LoopBusyError naming the holder and
    when it started."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with ExitStack() as held:
        try:
            held.enter_context(single_instance(Path(work_dir) / LOCK_NAME, "a loop run", since=started))
        except AlreadyRunningError as busy:
            raise LoopBusyError(f"{busy}: try again when it ends") from None
        yield


def run_loop(
    cfg: Config,
    store: PredictionStore,
    client: MlflowClient,
    action: Action | None = None,
    flow_run_id: str = "",
    progress: bool = False,
) -> LoopResult:
    """One loop run (see the module's docstring); `action` overrides the gate's decision (an engineer's
    choice, recorded as such). Raises LoopBusyError when another run holds the lock, ValueError when there is
    no champion to improve on."""
    if action is not None and action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    with loop_lock(cfg.loop.work_dir):
        return _run(cfg, store, client, action, flow_run_id, progress)


def _run(
    cfg: Config,
    store: PredictionStore,
    client: MlflowClient,
    forced: Action | None,
    flow_run_id: str,
    progress: bool,
) -> LoopResult:
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    champion = current_aliases(client).get(CHAMPION)
    if champion is None:
        raise ValueError(
            "there is no champion to improve on: run `make run` (or `dfguard pipeline run`) first"
        )
    work = Path(cfg.loop.work_dir)
    champion_dir = _champion_folder(client, champion, work)
    config = json.loads((champion_dir / CONFIG_NAME).read_text())
    contract = PreprocessingContract.from_json(
        json.dumps({**config["contract"], "hash": config["contract_hash"]})
    )
    dataset = export_feedback(store, cfg.loop.dataset_dir, contract, cfg.loop.holdout_share)
    seconds["export"] = time.perf_counter() - clock

    clock = time.perf_counter()
    drift = _drift(cfg, store, champion, champion_dir, work)
    seconds["drift"] = time.perf_counter() - clock
    since = _last_acting_run(client, cfg.registry.experiment)
    inputs = _inputs(store, since, version_metrics(client, get_version(client, champion)), drift)
    decision = loop_gate(inputs, cfg.loop)
    if forced is not None and forced != decision.action:
        decision = LoopDecision(forced, (*decision.reasons, f"{forced}: chosen by an engineer"), inputs)
    log.info("loop decision: %s (%s)", decision.action, "; ".join(decision.reasons))

    result = LoopResult("", decision, dataset, drift, seconds=seconds)
    if decision.action != "wait":
        result = _make_challenger(cfg, client, champion, champion_dir, decision, dataset, result, progress)
    run_id = _log_run(cfg, client, result, flow_run_id)
    return dataclasses.replace(
        result, run_id=run_id, seconds={k: round(v, 1) for k, v in result.seconds.items()}
    )


def _make_challenger(
    cfg: Config,
    client: MlflowClient,
    champion: str,
    champion_dir: Path,
    decision: LoopDecision,
    dataset: ExportSummary,
    result: LoopResult,
    progress: bool,
) -> LoopResult:
    """Learn (an expert added, or a replay fine-tune) or only re-calibrate, score both models on both
    suites, and register and gate the challenger."""
    seconds = dict(result.seconds)
    work = Path(cfg.loop.work_dir)
    run_dir = work / "current"
    shutil.rmtree(run_dir, ignore_errors=True)  # what a killed run left is rebuilt, never reused
    clock = time.perf_counter()
    train_config = cfg.train
    model_dir = champion_dir
    adds_expert = decision.action == "finetune" and cfg.loop.learn == "expert"
    if adds_expert:
        lineage = {
            "parent_version": champion,
            "feedback_fingerprint": dataset.fingerprint,
            "labels": dataset.items,
            "by_label": dataset.by_label,
        }
        model_dir, _ = learn_round(
            champion_dir,
            cfg.loop.dataset_dir,
            cfg.train.faces_dir,
            cfg.evaluate.manifest_path,
            run_dir / "composed",
            cfg.loop,
            lineage,
            progress,
        )
    elif decision.action == "finetune":
        replay_dir, _ = build_loop_datasets(
            cfg.train.faces_dir, cfg.loop.dataset_dir, run_dir, cfg.loop.replay_share, cfg.train.seed
        )
        train_config = fine_tune_config(champion_dir, replay_dir, run_dir / "finetuned", cfg.loop)
        model_dir = train_detector(train_config, progress=progress).model_dir
    seconds["train"] = time.perf_counter() - clock
    clock = time.perf_counter()
    if adds_expert:
        # The composition keeps the champion's calibrations: its experts' logits are placed on them
        # (loop/experts.py), and a few dozen labels of one kind would move a fit made on hundreds.
        challenger_dir = model_dir
    else:
        challenger_dir = run_dir / "calibrated"
        recalibrate_per_kind(
            model_dir, champion_dir, cfg.train.faces_dir, cfg.loop.dataset_dir, challenger_dir, cfg, progress
        )
    seconds["calibrate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    scores = {
        "frozen": {
            "champion": _champion_frozen_scores(cfg.evaluate, champion_dir, run_dir / "evaluate-champion"),
            "challenger": _frozen_scores(cfg.evaluate, challenger_dir, run_dir / "evaluate-challenger"),
        },
        "holdout": {
            name: holdout_scores(folder, cfg.loop.dataset_dir)
            for name, folder in (("champion", champion_dir), ("challenger", challenger_dir))
        },
    }
    checks = loop_checks(scores, cfg)
    seconds["score"] = time.perf_counter() - clock

    clock = time.perf_counter()
    registered = register_challenger(
        client,
        dataclasses.replace(
            cfg,
            calibrate=dataclasses.replace(cfg.calibrate, out_dir=str(challenger_dir)),
            evaluate=dataclasses.replace(cfg.evaluate, out_dir=str(run_dir / "evaluate-challenger")),
            # The round's settings, but the lineage's dataset is the frozen suite's: the promotion
            # gate compares figures measured on one face dataset, and both models were scored on it.
            train=dataclasses.replace(train_config, faces_dir=cfg.train.faces_dir),
        ),
    )
    tags = {
        "loop.parent_version": champion,
        "loop.action": decision.action,
        "loop.learn": cfg.loop.learn if decision.action == "finetune" else "",
        "loop.feedback_fingerprint": dataset.fingerprint,
        "loop.labels_used": str(dataset.items),
        "loop.checks": "\n".join(check.line for check in checks),
    }
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, registered.version, key, value)
    promoted = False
    if all(check.passed for check in checks):
        promotion = promote(
            client,
            registered.version,
            cfg.promotion,
            verify=loadable(client),
            experiment=cfg.registry.experiment,
        )
        promoted = promotion.promoted
        checks = (*checks, *promotion.gate.checks)
    seconds["register_promote"] = time.perf_counter() - clock
    return dataclasses.replace(
        result,
        challenger=registered.version,
        promoted=promoted,
        checks=tuple(checks),
        scores=scores,
        seconds=seconds,
    )


def recalibrate_per_kind(
    model_dir: Path,
    champion_dir: Path,
    faces_dir: str | Path,
    feedback_dir: str | Path,
    out_dir: Path,
    cfg: Config,
    progress: bool,
) -> None:
    """Each media kind's calibration re-fitted on validation plus the feedback-train items of that kind
    only; a kind with no feedback keeps the champion's calibration as it was (a photo-heavy feedback
    set never moves the videos' calibration). Writes the calibrated model folder `out_dir`."""
    from dfguard.faces.table import read_faces

    feedback = read_faces(feedback_dir)
    kinds = set(feedback.loc[feedback["split"] == "train", "media_kind"])
    champion_config = json.loads((champion_dir / CONFIG_NAME).read_text())
    fitted: dict[str, Any] = {}
    for kind, key in (("video", "calibration"), ("image", "photo_calibration")):
        if kind not in kinds:
            continue
        work = out_dir.parent / f"calibration-{kind}"
        _, calibration_dir = build_loop_datasets(
            faces_dir, feedback_dir, work, cfg.loop.replay_share, cfg.train.seed, media_kind=kind
        )
        done = recalibrate(model_dir, calibration_dir, work / "calibrated", cfg.calibrate, progress)
        refitted = json.loads((done.model_dir / CONFIG_NAME).read_text())
        fitted[key] = refitted[key]
        if kind == "video":
            fitted["motion"] = refitted.get("motion")
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.copytree(model_dir, out_dir)
    config = json.loads((out_dir / CONFIG_NAME).read_text())
    for key in ("calibration", "photo_calibration", "motion"):
        value = fitted[key] if key in fitted else champion_config.get(key)
        config.pop(key, None)
        if value is not None:
            config[key] = value
    (out_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def loop_checks(scores: dict[str, Any], cfg: Config) -> tuple[Check, ...]:
    """The loop's own promotion checks on figures of both models measured in this run: forgetting on
    the frozen test suite, no person of it called FAKE more often, calibration of each media kind, a
    gain in accuracy on the feedback holdout."""
    policy = cfg.loop
    frozen, holdout = scores["frozen"], scores["holdout"]
    old, new = frozen["champion"]["auc"], frozen["challenger"]["auc"]
    drop = old - new
    checks = [
        Check(
            "forgetting",
            not math.isnan(drop) and drop <= policy.max_forgetting + 1e-9,
            f"frozen suite video AUC {new:.4f} vs champion {old:.4f} (forgetting {drop:+.4f}, "
            f"at most {policy.max_forgetting})",
            {"champion": old, "challenger": new, "forgetting": drop},
        ),
        _person_check(frozen, policy.max_person_fp_rise),
    ]
    # Verdicts are what clients get: the holdout is judged by accuracy at each model's own threshold.
    # (AUC can be perfect on a kind of fake every verdict gets wrong: all scored low, reals lower.)
    metric = "accuracy"
    gain = holdout["challenger"][metric] - holdout["champion"][metric]
    checks.append(
        Check(
            "feedback holdout",
            not math.isnan(gain) and gain > policy.min_holdout_gain,
            f"feedback holdout {metric} {holdout['challenger'][metric]:.4f} vs champion "
            f"{holdout['champion'][metric]:.4f} (gain {gain:+.4f}, more than {policy.min_holdout_gain} "
            f"needed; {holdout['challenger']['n']} items)",
            {
                "champion": holdout["champion"][metric],
                "challenger": holdout["challenger"][metric],
                "gain": gain,
            },
        )
    )
    ece_ok, ece_text = ece_check(
        frozen["challenger"]["ece"], cfg.promotion.max_ece, frozen["challenger"].get("ece_noise", math.nan)
    )
    checks.append(
        Check("video ECE", ece_ok, f"frozen suite {ece_text}", {"ece": frozen["challenger"]["ece"]})
    )
    # Photos: within the bound, or no worse than the champion's (its photo ECE was never gated).
    photo_old, photo_new = (
        frozen["champion"].get("photo_ece", math.nan),
        frozen["challenger"].get("photo_ece", math.nan),
    )
    if not (math.isnan(photo_old) and math.isnan(photo_new)):
        bound = max(cfg.promotion.max_ece, photo_old + PHOTO_ECE_SLACK if not math.isnan(photo_old) else 0.0)
        checks.append(
            Check(
                "photo ECE",
                not math.isnan(photo_new) and photo_new <= bound + 1e-9,
                f"frozen suite frames judged as photos: ECE {photo_new:.4f} (champion {photo_old:.4f}, "
                f"at most {bound:.4f})",
                {"champion": photo_old, "challenger": photo_new, "bound": bound},
            )
        )
    return tuple(checks)


PHOTO_ECE_SLACK = 0.02  # a challenger's photo ECE may exceed the champion's by this much


def _person_check(frozen: dict[str, Any], max_rise: float) -> Check:
    """No person of the frozen suite whose real clips, or real frames judged as photos, the challenger
    calls FAKE more often than the champion did by more than `max_rise`; names those who are."""
    old, new = frozen["champion"].get("persons", {}), frozen["challenger"].get("persons", {})
    rises: dict[str, float] = {}
    for person, shares in new.items():
        for kind, share in shares.items():
            before = old.get(person, {}).get(kind, 0.0)
            rises[f"{person} ({kind})"] = round(share - before, 4)
    worst = max(rises.values(), default=0.0)
    flagged = sorted(name for name, rise in rises.items() if rise > max_rise + 1e-9)
    if not new:  # a suite whose manifest names nobody: nothing to compare per person
        return Check("per person", True, "the frozen suite names no people: no per-person figures", {})
    reason = f"real items called FAKE per person: largest rise {worst:+.3f} (at most {max_rise})" + (
        f"; more often for {', '.join(flagged)}" if flagged else ""
    )
    return Check("per person", not flagged, reason, {"rises": rises, "flagged": flagged})


def holdout_scores(model_dir: str | Path, feedback_dir: str | Path) -> dict[str, float]:
    """A model's figures on the feedback holdout, judged as the service judges: AUC (NaN with one
    class), accuracy and the share of fakes caught at its threshold, log loss, and the item count."""
    from dfguard.evaluation.run import score_split  # torch: only when a model is scored
    from dfguard.inference.predictor import Predictor

    predictor = Predictor(model_dir)
    try:
        _, videos = score_split(predictor, feedback_dir, HOLDOUT, progress=False)
    except ValueError:  # no holdout items yet
        return {"n": 0, "auc": math.nan, "accuracy": math.nan, "fake_recall": math.nan, "log_loss": math.nan}
    appearance = videos.get("appearance_logit", videos["logit"]).to_numpy()
    p = predictor.probabilities(
        appearance, videos["drift"].to_numpy(np.float64), videos["n_frames"].to_numpy()
    )
    y = videos["target"].to_numpy()
    # Each item at the threshold of the calibration that judges it (a photo: the photo calibration).
    threshold = np.array(
        [
            calibrator.threshold if calibrator else 0.5
            for calibrator in map(predictor.calibration_for, videos["drift"], videos["n_frames"])
        ]
    )
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    return {
        "n": len(y),
        "auc": roc_auc(y, p) if y.min() != y.max() else math.nan,
        "accuracy": float(np.mean((p >= threshold) == (y == 1))),
        "fake_recall": float(np.mean(p[y == 1] >= threshold[y == 1])) if (y == 1).any() else math.nan,
        "log_loss": float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))),
    }


def _champion_frozen_scores(base: EvaluateConfig, champion_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The champion's frozen-suite figures, measured once per champion and suite (they cannot change
    while it is the champion) and kept beside its downloaded folder: every later round reads them."""
    suite = {k: v for k, v in dataclasses.asdict(base).items() if k not in ("model_dir", "out_dir")}
    key = hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()[:16]
    cached = champion_dir.parent / f"frozen-{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    scores = _frozen_scores(base, champion_dir, out_dir)
    partial = cached.with_suffix(".partial")
    partial.write_text(json.dumps(scores, default=str))
    partial.replace(cached)
    return scores


def _frozen_scores(base: EvaluateConfig, model_dir: Path, out_dir: Path) -> dict[str, Any]:
    from dfguard.evaluation.run import run_evaluate  # torch: only when a model is scored

    metrics = run_evaluate(
        dataclasses.replace(base, model_dir=str(model_dir), out_dir=str(out_dir)), progress=False
    ).metrics
    video = metrics.get("video", {})
    return {
        "auc": _number(video.get("auc")),
        "ece": _number(video.get("ece")),
        "ece_noise": _number((metrics.get("ece_if_calibrated") or {}).get("high")),
        "photo_ece": _number((metrics.get("photo") or {}).get("ece")),
        "photo_auc": _number((metrics.get("photo") or {}).get("auc")),
        "by_method": {k: _number(v.get("auc")) for k, v in metrics.get("by_method", {}).items()},
        "persons": _real_fake_shares(out_dir),
    }


def _real_fake_shares(evaluation_dir: Path) -> dict[str, dict[str, float]]:
    """Per person of an evaluation: the share of their real videos, and of their real frames judged as
    photos, called FAKE."""
    from dfguard.evaluation.run import FRAMES_NAME, VIDEOS_NAME

    shares: dict[str, dict[str, float]] = {}
    for kind, name in (("videos", VIDEOS_NAME), ("photos", FRAMES_NAME)):
        path = evaluation_dir / name
        if not path.is_file():
            continue
        table = pd.read_parquet(path)
        reals = table[(table["target"] == 0) & table["identity"].notna()]
        for person, group in reals.groupby("identity"):
            shares.setdefault(str(person), {})[kind] = round(float((group["verdict"] == "FAKE").mean()), 4)
    return shares


def _inputs(
    store: PredictionStore,
    since: datetime | None,
    champion_metrics: dict[str, Any],
    drift: dict[str, Any] | None,
) -> LoopInputs:
    consensus = consensus_labels(store.reviewer_labels())
    decided = consensus[consensus["outcome"].isin(("real", "fake"))]
    if since is not None:
        decided = decided[pd.to_datetime(decided["labelled_at"], utc=True) > since]
    listed = store.predictions(labelled=True).set_index("prediction_id")
    joined = decided.join(listed[["verdict", "probability"]], on="prediction_id", how="inner")
    wrong = ((joined["verdict"] == "FAKE") & (joined["outcome"] == "real")) | (
        (joined["verdict"] == "REAL") & (joined["outcome"] == "fake")
    )
    feedback_ece = math.nan
    if len(joined) >= MIN_ECE_ITEMS:
        feedback_ece = expected_calibration_error(
            (joined["outcome"] == "fake").astype(int).to_numpy(), joined["probability"].to_numpy()
        )
    return LoopInputs(
        new_labels=len(joined),
        errors=int(wrong.sum()),
        feedback_ece=round(float(feedback_ece), 4),
        champion_ece=_number(champion_metrics.get("video", {}).get("ece")),
        drifted=None if drift is None else bool(drift["drifted"]),
    )


def _drift(
    cfg: Config, store: PredictionStore, champion: str, champion_dir: Path, work: Path
) -> dict[str, Any] | None:
    """The drift report of the window of the champion's predictions against its training faces, or
    None (logged why) when the window holds too few to compare or the two sides cannot be compared:
    the gate then decides on the labels alone."""
    from dfguard.loop.monitor import current_frame, reference_frame

    current = current_frame(
        store, cfg.loop.drift_window_days, cfg.loop.drift_window_last, model_version=champion
    )
    if len(current) < MIN_DRIFT_ROWS:
        log.info(
            "drift: %d predictions in the window, fewer than %d: no report", len(current), MIN_DRIFT_ROWS
        )
        return None
    from dfguard.drift import DriftPolicy, drift_report  # evidently: only when a report is made

    reference = reference_frame(champion_dir, cfg.train.faces_dir, work / "reference")
    name = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "_loop"
    policy = DriftPolicy(max_rows=cfg.loop.drift_max_rows, share_drifted=cfg.loop.drift_share)
    try:
        return drift_report(reference, current, Path(cfg.loop.drift_dir), name, policy).to_dict()
    except ValueError as err:  # e.g. too few reference videos: say so, and let the labels decide
        log.warning("drift: no report: %s", err)
        return None


def _last_acting_run(client: MlflowClient, experiment: str) -> datetime | None:
    runs = loop_runs(client, experiment)
    acted = runs[(runs["decision"].isin(ACTING)) & (runs["status"] == "FINISHED")] if len(runs) else runs
    return None if acted.empty else acted["started"].max().to_pydatetime()


def _champion_folder(client: MlflowClient, version: str, work: Path) -> Path:
    """The champion's model folder, downloaded once per version (a download cut short is redone)."""
    folder = work / "champions" / version
    done = folder / "model-folder"  # written last: names the downloaded model folder
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        downloaded = load(client, f"models:/{MODEL_NAME}/{version}", folder / "files")
        done.write_text(str(downloaded.resolve().relative_to(folder.resolve())))
    return folder / done.read_text()


def _log_run(cfg: Config, client: MlflowClient, result: LoopResult, flow_run_id: str) -> str:
    tags = {
        LOOP_RUN_TAG: result.decision.action,
        "dfguard.kind": "loop",
        "dfguard.flow_run_id": flow_run_id,
        "dfguard.loop.reasons": "\n".join(result.decision.reasons),
        "dfguard.loop.promoted": str(result.promoted).lower(),
        **({"dfguard.loop.challenger": result.challenger} if result.challenger else {}),
    }
    run = client.create_run(
        experiment_id(client, cfg.registry.experiment), run_name=f"loop {result.decision.action}", tags=tags
    )
    run_id = run.info.run_id
    for key, value in flatten(
        {"inputs": result.decision.inputs.to_dict(), "dataset": result.dataset.by_split}
    ).items():
        client.log_param(run_id, key, value)
    numbers = {"scores": result.scores, "seconds": result.seconds, "labels_used": result.dataset.items}
    if result.drift is not None:
        numbers["drift"] = {k: v for k, v in result.drift.items() if isinstance(v, int | float | bool)}
        for key in ("html_path", "json_path"):
            if result.drift.get(key) and Path(result.drift[key]).is_file():
                client.log_artifact(run_id, result.drift[key], "drift")
    log_metrics(client, run_id, numbers)
    client.log_dict(run_id, {**result.to_dict(), "run_id": run_id}, "loop.json")
    client.set_terminated(run_id)
    return run_id


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else math.nan
