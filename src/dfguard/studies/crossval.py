"""`dfguard crossval`: k-fold cross-validation over groups of people, for a figure every person backs.

One train/val/test split of a small corpus tests a detector on a handful of people, and its test AUC
swings by 0.1 or more with which people those are. Cross-validation rotates the roles instead: the
identity components (people linked by face swaps, as the ingest split keeps them whole) are dealt
into `folds` groups; fold k tests on group k, selects and calibrates on group k+1 and trains on the
rest. Each fold runs the real stages (`train_detector`, `run_calibrate`, `run_evaluate`) on a copy of
the face table with its own split column (the crops are shared through a link, not copied), so the
pooled figure measures exactly what the pipeline ships. Every video is tested once, by a model that
never saw its people, and the pooled calibrated probabilities give the cross-validated metrics.

Outputs, in `out_dir`: `crossval.json` (pooled and per-fold metrics), `videos.parquet` (every video's
held-out score and fold), `roc.png` (each fold and the pool), `identities.png` (scores by person) and
`fold-<k>/` (that fold's face table, model, calibrated model and reports).

`train_share` < 1 trains each fold on a random part of its training people (whole identity groups,
test and validation people unchanged): run at a few shares, it draws the learning curve over the
number of people, which says whether more people of the same kind would close the gap to a target.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dfguard.calibration import UNCERTAIN
from dfguard.calibration.stage import CalibrateResult, run_calibrate
from dfguard.config import Config
from dfguard.evaluation.run import (
    VIDEOS_NAME,
    EvaluateResult,
    breakdowns,
    clean_floats,
    evidence_aucs,
    run_evaluate,
)
from dfguard.faces.dataset import CROPS_DIR
from dfguard.faces.table import CONTRACT_NAME, FACES_NAME, read_faces
from dfguard.ingest.splits import identity_components
from dfguard.metrics import summary_metrics, threshold_metrics
from dfguard.plots import plot_roc, plot_scores_by_group
from dfguard.training.run import TrainResult, train_detector

log = logging.getLogger(__name__)

RESULT_NAME = "crossval.json"
# summary_metrics' entries that depend on one decision threshold: the pool has one per fold.
THRESHOLD_KEYS = ("threshold", "accuracy", "precision", "recall", "f1", "tn", "fp", "fn", "tp")


@dataclass(frozen=True)
class CrossvalResult:
    out_dir: Path
    metrics: dict[str, Any]


def identity_folds(manifest: pd.DataFrame, folds: int, seed: int) -> dict[str, int]:
    """The fold (0 to `folds` - 1) of every video of the manifest, keeping identity components whole.

    Components are shuffled with `seed`, then, largest first, each goes to the fold with the fewest
    videos so far, so folds hold about as many videos each. Raises ValueError when the manifest names
    no people (folds would then put one person's clips in training and test) or has fewer components
    than folds."""
    if folds < 3:
        raise ValueError(f"cross-validation needs at least 3 folds (train, val and test), got {folds}")
    named = manifest[["source_identity", "target_identity"]].fillna("").astype(bool).any(axis=1)
    if not named.all():
        raise ValueError(
            f"{int((~named).sum())} videos of the manifest name no person: folds could not keep people"
            " out of their own test fold"
        )
    components = identity_components(manifest.reset_index(drop=True))
    sizes = components.value_counts()
    if len(sizes) < folds:
        raise ValueError(f"{len(sizes)} groups of people cannot fill {folds} folds")
    order = sorted(sizes.index)
    random.Random(seed).shuffle(order)  # nosec B311  # a reproducible fold order, not a secret
    order.sort(key=lambda component: -sizes[component])  # stable: ties keep the shuffled order
    filled, fold_of = [0] * folds, {}
    for component in order:
        fold = min(range(folds), key=lambda k: (filled[k], k))
        fold_of[component] = fold
        filled[fold] += sizes[component]
    return dict(zip(manifest["video_id"], components.map(fold_of), strict=True))


def fold_splits(video_fold: pd.Series, fold: int, folds: int) -> pd.Series:
    """Each video's split in fold `fold`: its own group tests, the next one validates, the rest train."""
    return video_fold.map(
        lambda k: "test" if k == fold else "val" if k == (fold + 1) % folds else "train"
    ).rename("split")


def thin_training(
    splits: pd.Series, video_ids: pd.Series, manifest: pd.DataFrame, share: float, seed: int
) -> pd.Series:
    """`splits` with all but about `share` of the training videos moved to the split "unused", whole
    identity groups at a time (drawn in an order `seed` shuffles, until `share` of the training videos
    are kept; at least one group). Validation and test are left as they are."""
    if not 0 < share <= 1:
        raise ValueError(f"the share of training people must be in (0, 1], got {share}")
    if share == 1:
        return splits
    component_of = dict(
        zip(manifest["video_id"], identity_components(manifest.reset_index(drop=True)), strict=True)
    )
    training = splits == "train"
    train_videos = pd.Series(video_ids[training].unique())
    sizes = train_videos.map(component_of).value_counts()
    order = sorted(sizes.index)
    random.Random(seed).shuffle(order)  # nosec B311  # a reproducible draw order, not a secret
    kept, count = set(), 0
    for component in order:
        if kept and count >= share * sizes.sum():
            break
        kept.add(component)
        count += sizes[component]
    dropped = training & ~video_ids.map(component_of).isin(kept)
    return splits.mask(dropped, "unused")


def run_crossval(
    cfg: Config,
    folds: int,
    out_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    train_share: float = 1.0,
) -> CrossvalResult:
    """Cross-validate `cfg.train`'s detector on `cfg.train.faces_dir` (see the module docstring)."""
    out = Path(out_dir)
    faces_dir = Path(cfg.train.faces_dir)
    faces = read_faces(faces_dir)
    manifest = pd.read_parquet(cfg.train.manifest_path)
    video_fold = _video_folds(faces, manifest, folds, seed, faces_dir, cfg.train.manifest_path)

    tested, per_fold = [], []
    for fold in range(folds):
        fold_dir = out / f"fold-{fold + 1}"
        splits = thin_training(
            fold_splits(video_fold, fold, folds), faces["video_id"], manifest, train_share, seed * 1000 + fold
        )
        fold_faces = _fold_faces(faces.assign(split=splits), faces_dir, fold_dir)
        trained, calibrated, evaluated = _run_stages(cfg, fold_faces, fold_dir, progress)
        threshold = calibrated.calibrator.threshold
        videos = pd.read_parquet(evaluated.out_dir / VIDEOS_NAME).assign(fold=fold + 1, threshold=threshold)
        tested.append(videos)
        summary = {
            "fold": fold + 1,
            "test_identities": sorted(videos["identity"].astype(str).unique()),
            "train_people": _people(manifest, faces.loc[splits == "train", "video_id"]),
            "videos": len(videos),
            "val_video_auc": trained.val_video_auc,
            "temperature": calibrated.calibrator.temperature,
            "threshold": threshold,
            "test_video_auc": evaluated.metrics["video"]["auc"],
            "test_video_ece": evaluated.metrics["video"]["ece"],
            "test_appearance_video_auc": evaluated.metrics["appearance_video_auc"],
            "test_motion_video_auc": evaluated.metrics["motion_video_auc"],
            "train_seconds": round(trained.seconds, 1),
        }
        per_fold.append(summary)
        _report_fold(summary, folds, progress)

    pooled = pd.concat(tested, ignore_index=True)
    metrics = {**_pooled_metrics(pooled, per_fold, cfg, folds, seed), "train_share": train_share}
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_NAME).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    pooled.to_parquet(out / VIDEOS_NAME, index=False)
    _plots(pooled, out)
    return CrossvalResult(out, metrics)


def _video_folds(
    faces: pd.DataFrame, manifest: pd.DataFrame, folds: int, seed: int, faces_dir: Path, manifest_path: str
) -> pd.Series:
    """The fold of each face's video; raises ValueError when the manifest lacks some of the face
    table's videos, whose people it could not keep out of their own test fold."""
    video_fold = faces["video_id"].map(identity_folds(manifest, folds, seed))
    if video_fold.isna().any():
        missing = faces.loc[video_fold.isna(), "video_id"].nunique()
        raise ValueError(f"{missing} videos of {faces_dir / FACES_NAME} are not in {manifest_path}")
    return video_fold


def _run_stages(
    cfg: Config, fold_faces: Path, fold_dir: Path, progress: bool
) -> tuple[TrainResult, CalibrateResult, EvaluateResult]:
    """The pipeline's own train, calibrate and evaluate stages on one fold's face table, with the main
    config's settings and only the fold's paths changed, so the pooled figure measures what ships."""
    trained = train_detector(
        dataclasses.replace(
            cfg.train,
            faces_dir=str(fold_faces),
            out_dir=str(fold_dir / "model"),
            checkpoint_dir=str(fold_dir / "checkpoints"),
        ),
        progress=progress,
    )
    calibrated = run_calibrate(
        dataclasses.replace(
            cfg.calibrate,
            model_dir=str(trained.model_dir),
            faces_dir=str(fold_faces),
            out_dir=str(fold_dir / "calibrated"),
            report_dir=str(fold_dir / "calibrate"),
        ),
        progress=progress,
    )
    evaluated = run_evaluate(
        dataclasses.replace(
            cfg.evaluate,
            model_dir=str(calibrated.model_dir),
            faces_dir=str(fold_faces),
            manifest_path=cfg.train.manifest_path,
            split="test",
            out_dir=str(fold_dir / "evaluate"),
        ),
        progress=progress,
    )
    return trained, calibrated, evaluated


def _report_fold(summary: dict[str, Any], folds: int, progress: bool) -> None:
    """A fold's figures as it ends: a study runs for hours, and a bad fold is worth stopping early for."""
    log.info("fold %d/%d: %s", summary["fold"], folds, summary)
    if progress:
        print(
            f"fold {summary['fold']}/{folds}: test video AUC {summary['test_video_auc']}, "
            f"ECE {summary['test_video_ece']} ({len(summary['test_identities'])} people)",
            flush=True,
        )


def _people(manifest: pd.DataFrame, video_ids: pd.Series) -> int:
    """How many people (target or swap source) the videos show."""
    rows = manifest[manifest["video_id"].isin(set(video_ids))]
    names = pd.concat([rows["source_identity"], rows["target_identity"]]).dropna().astype(str)
    return int(names[names != ""].nunique())


def _fold_faces(faces: pd.DataFrame, source: Path, fold_dir: Path) -> Path:
    """A face dataset folder for one fold: its own table and contract, the source's crops linked."""
    folder = fold_dir / "faces"
    folder.mkdir(parents=True, exist_ok=True)
    faces.to_parquet(folder / FACES_NAME, index=False)
    shutil.copyfile(source / CONTRACT_NAME, folder / CONTRACT_NAME)
    link = folder / CROPS_DIR
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink((source / CROPS_DIR).resolve(), link, target_is_directory=True)
    return folder


def _pooled_metrics(
    pooled: pd.DataFrame, per_fold: list[dict[str, Any]], cfg: Config, folds: int, seed: int
) -> dict[str, Any]:
    """Metrics of every fold's held-out videos together. Each fold's probabilities are calibrated on its
    own validation people, so ranking and calibration figures pool them as they are; the decisions
    (accuracy, precision, recall, counts, the UNCERTAIN share) are each fold's own, at its threshold.

    Study-specific, not `run_evaluate`'s metrics: that stage scores one model at one threshold, while
    the pool holds one threshold per fold. The pieces that do not depend on a threshold are the stage's
    own (`dfguard.metrics`, `breakdowns`, `evidence_aucs`, `clean_floats`)."""
    aucs = np.array([f["test_video_auc"] for f in per_fold], dtype=np.float64)
    y, p = pooled["target"].to_numpy(), pooled["probability"].to_numpy()
    called_fake = (p >= pooled["threshold"].to_numpy()).astype(np.float64)
    decided = (pooled["verdict"] != UNCERTAIN).to_numpy()
    ranking = {k: v for k, v in summary_metrics(y, p).items() if k not in THRESHOLD_KEYS}
    return {
        "folds": folds,
        "seed": seed,
        "model": cfg.train.model,
        "train": dataclasses.asdict(cfg.train),
        "people": int(pooled["identity"].nunique()),
        "videos": len(pooled),
        "video": clean_floats({**ranking, **threshold_metrics(y, called_fake)}),
        "uncertain_fraction": round(float(np.mean(~decided)), 6),
        "decided_accuracy": round(float(np.mean(called_fake[decided] == y[decided])), 6)
        if decided.any()
        else None,
        # Per-group decisions at 0.5: the pool has no single calibrated threshold (see above).
        **breakdowns(pooled, 0.5),
        **evidence_aucs(pooled),  # raw logits and drifts pooled as they are, uncalibrated
        "fold_auc_mean": round(float(np.nanmean(aucs)), 6),
        "fold_auc_std": round(float(np.nanstd(aucs)), 6),
        "per_fold": per_fold,
    }


def _plots(pooled: pd.DataFrame, out: Path) -> None:
    """One ROC curve per fold and the pool's, and the scores by person: study-specific, as each fold's
    own evaluation already draws its curves per method (`run_evaluate`); the spread between folds and
    the pool is what only the study shows."""
    curves = {
        f"fold {fold}": (videos["target"].to_numpy(), videos["probability"].to_numpy())
        for fold, videos in pooled.groupby("fold")
        if videos["target"].nunique() == 2
    }
    curves["pooled"] = (pooled["target"].to_numpy(), pooled["probability"].to_numpy())
    plot_roc(curves, out / "roc.png", title="ROC, held-out videos of each fold")
    plot_scores_by_group(pooled, "identity", out / "identities.png", 0.5)
