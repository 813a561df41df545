"""A loop round that learns: one expert fitted on the reviewers' labels, added to the champion's
composition (`models.composed`) without touching what it holds.

What an expert is fitted on, in the base detector's head input (for `clip_frozen`, its cached CLIP
features):
    fakes   the feedback-train fakes' faces (what reviewers confirmed);
    reals   the feedback-train reals' faces and the training + validation reals of the face dataset,
            `loop.expert_reals_per_video` faces per video: many people, so that "real" is not learnt
            as "the few people in the feedback".

Kept from firing on real people it has not seen, three ways:
1. The identity subspace is removed. A linear score fitted on a couple of dozen people learns their
   identities as well as the manipulation, and an unseen person who looks like the labelled fakes'
   people is then called fake. The directions along which the reals' per-person means vary most
   (the between-person scatter of the standardised features; every feedback real counts as a person
   of its own, since served items carry no identity) are projected out before the fit, and the
   expert's weights are kept orthogonal to them.
2. Its threshold is fitted on people it was not fitted on. The reals' groups (people, or feedback
   items) are dealt into `loop.expert_folds` folds; each fold's reals (and fakes) are scored by an
   expert fitted without them. The expert fires from the highest of: the `1 - expert_real_fire`
   quantile of those held-out real scores, and each held-out person's `1 - expert_person_fire`
   quantile. So on a person it never saw it fires on about that share of their real faces at most.
3. It only ever raises a score: where it fires, the face's logit becomes at least `floor` (the logit
   both calibrations call FAKE from) rising with the score; elsewhere the base decides alone.

The scores and figures of the held-out folds are what the round reports (`ExpertFit.figures`); the
promotion checks then measure the composed model on the frozen suite, per person.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from tqdm import tqdm

from dfguard.calibration import Calibrator
from dfguard.config import LoopConfig
from dfguard.faces.crops import read_crop
from dfguard.faces.table import read_faces
from dfguard.ingest.manifest import manifest_columns
from dfguard.loop.dataset import TRAIN
from dfguard.models import FrameDetector, load_detector, save_detector
from dfguard.models.composed import ComposedDetector, compose, experts_of
from dfguard.models.io import CONFIG_NAME, RESERVED_KEYS
from dfguard.transforms import to_batch

log = logging.getLogger(__name__)

COMPOSITION_KEY = "composition"  # config.json: one entry per loop round that added an expert
FLOOR_MARGIN = 0.25  # logits above the calibrations' FAKE edge where an expert starts
HIGH_PROBABILITY = 0.99  # the calibrated probability the median labelled fake of the kind is given
BATCH = 32


@dataclass(frozen=True)
class ExpertFit:
    """One fitted expert (in the base's head-input units) and what its held-out folds showed."""

    weight: np.ndarray  # (D,)
    bias: float
    threshold: float
    floor: float
    slope: float
    figures: dict[str, float | int]

    def as_expert(self) -> dict[str, torch.Tensor | float]:
        """The form `models.composed.compose` takes."""
        return {
            "weight": torch.from_numpy(self.weight.astype(np.float32)),
            "bias": self.bias,
            "threshold": self.threshold,
            "floor": self.floor,
            "slope": self.slope,
        }


def identity_basis(z: np.ndarray, groups: np.ndarray, rank: int) -> np.ndarray:
    """(D, r) orthonormal directions along which the groups' mean (standardised) features vary most:
    the identity subspace of the reals, r = min(rank, groups - 1)."""
    names, index = np.unique(groups, return_inverse=True)
    if rank <= 0 or len(names) < 2:
        return np.zeros((z.shape[1], 0), np.float64)
    sums = np.zeros((len(names), z.shape[1]))
    np.add.at(sums, index, z)
    means = sums / np.bincount(index)[:, None]
    means -= means.mean(axis=0)
    _, _, vt = np.linalg.svd(means, full_matrices=False)
    return vt[: min(rank, len(names) - 1)].T


def _without(z: np.ndarray, basis: np.ndarray) -> np.ndarray:
    return z - (z @ basis) @ basis.T


def _fit_direction(z: np.ndarray, y: np.ndarray, strength: float) -> tuple[np.ndarray, float]:
    """A class-balanced logistic regression's weights and intercept (L2, C = `strength`)."""
    model = LogisticRegression(C=strength, class_weight="balanced", max_iter=300)
    model.fit(z, y)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def fit_expert(
    fakes: np.ndarray,
    fake_groups: np.ndarray,
    reals: np.ndarray,
    real_groups: np.ndarray,
    floor: float,
    high: float,
    policy: LoopConfig,
    seed: int = 0,
) -> ExpertFit:
    """The expert of the module docstring from head inputs of labelled fakes and of reals (N, D), each
    with its group (a person or a feedback item); `floor` and `high` are the logits the calibrations
    call FAKE from and give probability `HIGH_PROBABILITY`."""
    if len(fakes) == 0 or len(reals) == 0:
        raise ValueError("an expert needs labelled fakes and reals to be fitted on")
    mean = reals.mean(axis=0)
    scale = reals.std(axis=0) + 1e-6
    z_fake, z_real = (fakes - mean) / scale, (reals - mean) / scale
    basis = identity_basis(z_real, real_groups, policy.expert_identity_rank)
    z_fake, z_real = _without(z_fake, basis), _without(z_real, basis)
    z = np.concatenate([z_fake, z_real])
    y = np.concatenate([np.ones(len(z_fake)), np.zeros(len(z_real))])

    # Each group is scored by an expert fitted without it (fakes' and reals' groups dealt into the
    # folds apart, so every fold holds both). The expert deployed is the folds' average: for a person
    # none of them saw, its score is the mean of scores distributed like the held-out ones, so the
    # threshold fitted on those fires on that person no more often than it did on them.
    rng = np.random.default_rng(seed)
    folds = min(policy.expert_folds, len(np.unique(fake_groups)), len(np.unique(real_groups)))
    held_out = np.full(len(z), np.nan)
    if folds >= 2:
        fold = np.concatenate([_deal(fake_groups, folds, rng), _deal(real_groups, folds, rng)])
        fits = []
        for k in range(folds):
            out = fold == k
            w, b = _fit_direction(z[~out], y[~out], policy.expert_strength)
            held_out[out] = z[out] @ w + b
            fits.append((w, b))
        weight = np.mean([w for w, _ in fits], axis=0)
        bias = float(np.mean([b for _, b in fits]))
    else:  # too few groups to hold any out: one fit, judged on its own training faces (flagged)
        weight, bias = _fit_direction(z, y, policy.expert_strength)
        held_out = z @ weight + bias
    weight = weight - basis @ (basis.T @ weight)  # orthogonal to the identity subspace, exactly
    real_out, fake_out = held_out[len(z_fake) :], held_out[: len(z_fake)]
    threshold = _threshold(real_out, np.asarray(real_groups, str), policy)
    fired = fake_out[fake_out >= threshold]
    spread = float(np.std(fake_out)) or 1.0
    reach = float(np.median(fired)) - threshold if fired.size else spread
    slope = max(high - floor, 0.0) / max(reach, 1e-3)
    # Standardisation folded into the weights: the expert reads the raw head input.
    raw_weight = weight / scale
    raw_bias = bias - float(raw_weight @ mean)
    figures = {
        "fakes": len(fakes),
        "reals": len(reals),
        "fake_items": int(np.unique(fake_groups).size),
        "real_groups": int(np.unique(real_groups).size),
        "identity_rank": int(basis.shape[1]),
        "folds": int(folds),
        "heldout_fake_recall": round(float(np.mean(fake_out >= threshold)), 4),
        "heldout_real_fire": round(float(np.mean(real_out >= threshold)), 4),
        "heldout_worst_group_fire": round(_worst_group_fire(real_out, real_groups, threshold), 4),
    }
    return ExpertFit(raw_weight, raw_bias, float(threshold), float(floor), float(slope), figures)


def _deal(groups: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Each item's fold: its group's, the groups dealt round-robin in a random order."""
    names, index = np.unique(np.asarray(groups, str), return_inverse=True)
    fold_of_group = np.empty(len(names), int)
    fold_of_group[rng.permutation(len(names))] = np.arange(len(names)) % folds
    return fold_of_group[index]


def _threshold(scores: np.ndarray, groups: np.ndarray, policy: LoopConfig) -> float:
    """The score the expert fires from: no more than `expert_real_fire` of held-out real faces and
    `expert_person_fire` of any held-out person's reach it (just above the quantile, so exactly that
    share or fewer)."""
    edges = [np.quantile(scores, 1.0 - policy.expert_real_fire)]
    for name in np.unique(groups):
        own = scores[groups == name]
        if own.size >= policy.expert_min_person_faces:
            edges.append(np.quantile(own, 1.0 - policy.expert_person_fire))
    return float(np.nextafter(max(edges), np.inf))


def _worst_group_fire(scores: np.ndarray, groups: np.ndarray, threshold: float) -> float:
    frame = pd.DataFrame({"group": np.asarray(groups, str), "fired": scores >= threshold})
    return float(frame.groupby("group")["fired"].mean().max())


def calibrated_logits(config: dict[str, Any]) -> tuple[float, float]:
    """(floor, high): the raw logit every calibration of a model calls FAKE from (plus a margin), and
    the one where they all give at least `HIGH_PROBABILITY`. An uncalibrated model: 0.6 and 0.99."""
    calibrators = [
        Calibrator.from_dict(config[key]) for key in ("calibration", "photo_calibration") if config.get(key)
    ]
    if not calibrators:
        return float(np.log(0.6 / 0.4)) + FLOOR_MARGIN, float(
            np.log(HIGH_PROBABILITY / (1 - HIGH_PROBABILITY))
        )
    floor = max(c.logit_of(c.fake_from) for c in calibrators) + FLOOR_MARGIN
    high = max(max(c.logit_of(HIGH_PROBABILITY) for c in calibrators), floor + 1.0)
    return floor, high


# -- head inputs ------------------------------------------------------------------------------------
def head_inputs(model: FrameDetector, crop_paths: list[str], desc: str = "") -> np.ndarray:
    """(N, D) what the base detector's head reads for each crop file (for `clip_frozen`, features from
    the active feature store where it holds them)."""
    rows = []
    model.eval()
    starts = range(0, len(crop_paths), BATCH)
    with torch.inference_mode():
        for start in tqdm(starts, desc=desc, unit="batch", disable=not desc):
            crops = [read_crop(path) for path in crop_paths[start : start + BATCH]]
            rows.append(model.embed(to_batch(crops, model.preset)).float().cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.head_input_dim), np.float32)


def reference_reals(
    model: FrameDetector,
    faces_dir: str | Path,
    manifest_path: str | Path,
    per_video: int,
    cache_dir: Path,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Head inputs of the training + validation reals (`per_video` faces per video, spread over the
    clip) and each face's person (the manifest's identity, else the video): computed once per base
    detector and face table, then read from `cache_dir`."""
    faces = read_faces(faces_dir, subject_only=True)
    faces = faces[(faces["label"] == "real") & faces["split"].isin(("train", "val"))]
    ordered = faces.sort_values(["video_id", "frame"])
    position = ordered.groupby("video_id").cumcount().to_numpy()
    count = ordered.groupby("video_id")["frame"].transform("size").to_numpy()
    # `per_video` faces spread over each clip: those whose rank lands on a new step of count/per_video.
    step = np.maximum(count / per_video, 1.0)
    picked = ordered[np.floor(position / step) != np.floor((position - 1) / step)]
    key = hashlib.sha256(
        json.dumps({"model": model.config, "crops": picked["crop"].tolist()}, sort_keys=True).encode()
    ).hexdigest()[:16]
    cached = cache_dir / f"reals-{key}.npz"
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as held:
            return held["inputs"], held["groups"]
    root = Path(faces_dir)
    inputs = head_inputs(
        model, [str(root / crop) for crop in picked["crop"]], "reference reals" if progress else ""
    )
    groups = picked["video_id"].astype(str).to_numpy()
    if manifest_path and Path(manifest_path).is_file():
        identity = manifest_columns(manifest_path, picked["video_id"], ["target_identity"])["target_identity"]
        groups = np.where(identity.notna().to_numpy(), identity.astype(str).to_numpy(), groups)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial.npz")
    np.savez(partial, inputs=inputs, groups=groups.astype(str))
    partial.replace(cached)
    return inputs, groups.astype(str)


# -- a round ----------------------------------------------------------------------------------------
def learn_round(
    champion_dir: Path,
    feedback_dir: str | Path,
    faces_dir: str | Path,
    manifest_path: str | Path,
    out_dir: Path,
    policy: LoopConfig,
    lineage: dict[str, Any],
    progress: bool = False,
) -> tuple[Path, ExpertFit]:
    """The champion's composition plus one expert fitted on the feedback-train labels, saved to
    `out_dir` with the champion's contract and calibrations and the round's entry in its lineage."""
    champion, config = load_detector(champion_dir)
    base = champion.base if isinstance(champion, ComposedDetector) else champion
    if not isinstance(base, FrameDetector) or base.clip_model:
        raise ValueError(f"{champion_dir} is not a frame detector: the loop cannot add an expert to it")
    feedback = read_faces(feedback_dir)
    train = feedback[feedback["split"] == TRAIN]
    fakes, reals = train[train["label"] == "fake"], train[train["label"] == "real"]
    if fakes.empty:
        raise ValueError(f"{feedback_dir} has no feedback-train fakes: no new kind to learn")
    root = Path(feedback_dir)
    fake_inputs = head_inputs(
        base, [str(root / c) for c in fakes["crop"]], "feedback fakes" if progress else ""
    )
    feedback_reals = head_inputs(
        base, [str(root / c) for c in reals["crop"]], "feedback reals" if progress else ""
    )
    corpus_reals, corpus_groups = reference_reals(
        base,
        faces_dir,
        manifest_path,
        policy.expert_reals_per_video,
        Path(policy.work_dir) / "reference",
        progress,
    )
    floor, high = calibrated_logits(config)
    real_inputs = np.concatenate([corpus_reals, feedback_reals])
    real_groups = np.concatenate([corpus_groups, "feedback:" + reals["video_id"].astype(str).to_numpy()])
    fake_groups = fakes["video_id"].astype(str).to_numpy()
    fit = fit_expert(fake_inputs, fake_groups, real_inputs, real_groups, floor, high, policy)
    # A label is the item's, not each face's: a fake photo of a group holds real bystanders too. One
    # multiple-instance step: of each fake frame's faces, the one the first fit finds most fake is
    # the manipulated one, and the expert is fitted again on those.
    frame_of = fake_groups + ":" + fakes["frame"].astype(str).to_numpy()
    if len(np.unique(frame_of)) < len(frame_of):
        scores = fake_inputs @ fit.weight + fit.bias
        ranked = pd.DataFrame({"frame": frame_of, "score": scores}).sort_values("score", ascending=False)
        keep = np.sort(ranked.drop_duplicates("frame").index.to_numpy())
        fit = fit_expert(fake_inputs[keep], fake_groups[keep], real_inputs, real_groups, floor, high, policy)
    earlier = experts_of(champion) if isinstance(champion, ComposedDetector) else []
    model = compose(base, [*earlier, fit.as_expert()])
    extra = {k: v for k, v in config.items() if k not in RESERVED_KEYS}
    extra[COMPOSITION_KEY] = [
        *config.get(COMPOSITION_KEY, []),
        {**lineage, "expert": len(earlier), **fit.figures},
    ]
    shutil.rmtree(out_dir, ignore_errors=True)
    save_detector(model, out_dir, extra)
    log.info("expert %d fitted: %s", len(earlier), fit.figures)
    return out_dir, fit


def composition_of(model_dir: str | Path) -> list[dict[str, Any]]:
    """The rounds a model folder's composition holds (empty for a model the loop never added to)."""
    return json.loads((Path(model_dir) / CONFIG_NAME).read_text()).get(COMPOSITION_KEY, [])
