"""`dfguard train`: fit a registered detector on a face dataset's train split, select it on validation.

Schedule: `frozen_epochs` of head-only warm-up (backbone weights and BatchNorm statistics fixed, so the
new head does not wreck pretrained features with its first, large gradients), then full fine-tuning
with the backbone at a lower learning rate; AdamW, linear warm-up then cosine decay over all steps.
After each epoch the model scores every validation face; the epoch with the best video-level AUC
(mean of frame probabilities per video; validation loss breaks ties) is kept, and training stops after
`patience` epochs without improvement. With `ema_decay` > 0 it is a moving average of the weights
(`training.ema`) that is validated and kept, not the last step's. Data come in real/fake pairs (see
`training.data`). A clip model (`temporal`) trains on pairs of clips of `clip_length` consecutive faces
and is validated on each video's faces as one clip, as the predictor will judge it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from dfguard.config import TrainConfig, save_resolved
from dfguard.faces.contract import PreprocessingContract
from dfguard.faces.table import FACES_NAME, read_contract
from dfguard.metrics import roc_auc
from dfguard.models import crop_detector, model_class
from dfguard.models.base import Detector, FrameDetector, freeze_backbone
from dfguard.models.io import save_detector, start_from
from dfguard.models.scoring import score_crop_files, track_clip_logits
from dfguard.plots import plot_history
from dfguard.training.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from dfguard.training.data import (
    NO_PARTNER,
    TrainingFaces,
    load_faces,
    person_ids,
    real_partners,
)
from dfguard.training.distributed import (
    barrier,
    check_in_step,
    current_world,
    epoch_sampler,
    from_main,
    is_main,
    mean_over_ranks,
    refuse_unsupported,
    replicate,
    training_device,
)
from dfguard.training.ema import WeightAverage
from dfguard.training.heads import train_feature_head
from dfguard.training.identity import UNKNOWN_PERSON, IdentityAdversary
from dfguard.training.losses import loss_function
from dfguard.training.schedule import warmup_cosine
from dfguard.training.step import train_step
from dfguard.transforms import scaled_augmentation

log = logging.getLogger(__name__)

HISTORY_NAME = "history.json"
CURVES_NAME = "training_curves.png"
# Settings that change how fast a run goes but not what it computes: a resume may change them.
RUN_ONLY_SETTINGS = ("resume", "device", "workers")


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    best_epoch: int
    val_video_auc: float
    val_frame_auc: float
    epochs_run: int
    seconds: float


EpochHook = Callable[[dict[str, Any], Detector], None]


@dataclass
class _Optimisation:
    """Everything a step changes, so a checkpoint saves and a resume restores it as one."""

    model: Detector
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    average: WeightAverage | None
    adversary: IdentityAdversary | None

    @property
    def judged(self) -> Detector:
        """The average, when kept, is what is validated, selected and saved."""
        return self.model if self.average is None else self.average.model

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            **({"ema": self.average.state_dict()} if self.average is not None else {}),
            **({"adversary": self.adversary.state_dict()} if self.adversary is not None else {}),
        }

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        restore_rng_state(saved["rng"])
        if self.average is not None:
            self.average.load_state_dict(saved["ema"])
        if self.adversary is not None:
            self.adversary.load_state_dict(saved["adversary"])


def train_detector(
    cfg: TrainConfig, progress: bool = True, on_epoch_end: EpochHook | None = None
) -> TrainResult:
    """Train `cfg.model` on `cfg.faces_dir` and save the best epoch's model to `cfg.out_dir`.

    `on_epoch_end(record, model)` is called after each epoch's checkpoint is saved (a flow logs the
    record to MLflow there); an exception it raises stops training, resumable from that checkpoint.

    Raises FileNotFoundError for a missing face dataset and ValueError for unusable data or settings.
    """
    started = time.perf_counter()
    _check(cfg)
    refuse_unsupported(cfg)
    device = training_device(cfg.device)
    progress = progress and is_main()
    use_amp = cfg.amp and device.startswith("cuda")
    torch.manual_seed(cfg.seed)
    train_faces, val_faces = load_faces(cfg.faces_dir, "train"), load_faces(cfg.faces_dir, "val")
    if val_faces["target"].nunique() < 2:
        raise ValueError("the validation split needs real and fake faces to select a model on")
    contract = read_contract(cfg.faces_dir)
    if getattr(model_class(cfg.model), "trains_on_features", False):
        return _train_on_features(cfg, train_faces, val_faces, contract, device, started, progress)
    run, loader = _start_optimisation(cfg, train_faces, contract.margin, device, use_amp)
    criterion = loss_function(cfg.loss, cfg.focal_gamma)
    checkpoint_dir = Path(cfg.checkpoint_dir) / _settings_key(cfg)
    state = _resumed_state(cfg, run, checkpoint_dir)

    while state["epoch"] < cfg.epochs and state["stale"] < cfg.patience:
        epoch = state["epoch"]
        record, metrics = _run_epoch(cfg, run, loader, criterion, val_faces, epoch, device, use_amp, progress)
        state["history"].append(record)
        log.info("epoch %d: %s", epoch + 1, record)
        _select(state, metrics, run.judged)
        if is_main():
            save_checkpoint(checkpoint_dir, {**state, **run.state_dict()})
            if on_epoch_end is not None:
                on_epoch_end(record, run.judged)
        barrier()

    run.model.load_state_dict(state["best_model"])
    seconds = time.perf_counter() - started
    if is_main():
        _save_trained(run.model, cfg, contract, state, seconds, device)
    return _result(cfg, state, seconds)


def _result(cfg: TrainConfig, state: dict[str, Any], seconds: float) -> TrainResult:
    best = state["best"]
    return TrainResult(
        Path(cfg.out_dir),
        best["epoch"],
        best["val_video_auc"],
        best["val_frame_auc"],
        state["epoch"],
        seconds,
    )


def _train_on_features(
    cfg: TrainConfig,
    train_faces: pd.DataFrame,
    val_faces: pd.DataFrame,
    contract: PreprocessingContract,
    device: str,
    started: float,
    progress: bool,
) -> TrainResult:
    """A head on a frozen backbone, trained on its cached features (`training.heads`), selected and
    saved as every model is."""
    model = _build_model(cfg)
    if cfg.init_from:
        start_from(model, cfg.init_from)
    state = train_feature_head(
        cfg,
        model,
        train_faces,
        val_faces,
        contract.margin,
        lambda logits: metrics_of_logits(logits, val_faces),
        _select,
        progress,
    )
    seconds = time.perf_counter() - started
    _save_trained(model, cfg, contract, state, seconds, device)
    return _result(cfg, state, seconds)


def _start_optimisation(
    cfg: TrainConfig, train_faces: pd.DataFrame, margin: float, device: str, use_amp: bool
) -> tuple[_Optimisation, DataLoader]:
    """The model, its adversary, optimiser, schedule and loader, built in one fixed order: each
    initialisation draws from the seeded generator, so the order is part of what makes a run
    reproducible."""
    model = _build_model(cfg)
    if cfg.init_from:
        start_from(model, cfg.init_from)
    model = model.to(device)
    people = person_ids(train_faces, cfg.manifest_path)
    adversary = _identity_adversary(cfg, model, people, device)
    optimizer = torch.optim.AdamW(
        [
            {"params": list(model.head_parameters()), "lr": cfg.lr},
            {"params": list(model.backbone_parameters()), "lr": cfg.lr * cfg.backbone_lr_scale},
            *([{"params": list(adversary.parameters()), "lr": cfg.lr}] if adversary is not None else []),
        ],
        weight_decay=cfg.weight_decay,
    )
    loader = _training_loader(cfg, train_faces, people, model, margin, device)
    run = _Optimisation(
        model,
        optimizer,
        warmup_cosine(optimizer, cfg.epochs * len(loader), cfg.warmup_fraction),
        torch.amp.GradScaler("cuda", enabled=use_amp),
        WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 else None,
        adversary,
    )
    return run, loader


def _resumed_state(cfg: TrainConfig, run: _Optimisation, checkpoint_dir: Path) -> dict[str, Any]:
    """The selection state (epochs done, history, best so far, epochs without improvement), restored
    with `run` from the last checkpoint when `cfg.resume` asks for it, so a resumed run selects as an
    uninterrupted one would."""
    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_model": None, "stale": 0}
    # Rank 0's checkpoint, sent to every rank: only its machine need hold it.
    saved = from_main(lambda: load_checkpoint(checkpoint_dir) if cfg.resume else None)
    if saved is not None:
        run.load_state_dict(saved)
        state = {k: saved[k] for k in state}
        log.info("resuming after epoch %d from %s", state["epoch"], checkpoint_dir)
    return state


def _run_epoch(
    cfg: TrainConfig,
    run: _Optimisation,
    loader: DataLoader,
    criterion: torch.nn.Module,
    val_faces: pd.DataFrame,
    epoch: int,
    device: str,
    use_amp: bool,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Train one epoch (0-based `epoch`) and validate what is judged; returns the epoch's record for
    the history and its validation metrics, which selection compares. One bar shows both, so the
    operator sees the loss and the validation figures of an epoch on one line."""
    frozen = epoch < cfg.frozen_epochs
    freeze_backbone(run.model, frozen)
    loader.sampler.epoch = epoch
    epoch_started = time.perf_counter()
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
    losses = _train_epoch(run, loader, bar, criterion, device, use_amp, cfg.blend_map_weight, cfg.grad_clip)
    losses = mean_over_ranks(losses)
    check_in_step(run.model, len(loader) * (loader.batch_size or 0))
    train_loss = losses["train_loss"]
    bar.set_postfix(loss=f"{train_loss:.3f}", validating="...")
    metrics = from_main(lambda: validation_metrics(run.judged, val_faces, device))
    bar.set_postfix(
        loss=f"{train_loss:.3f}",
        val_video_auc=metrics["val_video_auc"],
        val_frame_auc=metrics["val_frame_auc"],
    )
    bar.close()
    record = {
        "epoch": epoch + 1,
        **losses,
        **metrics,
        "lr": run.optimizer.param_groups[0]["lr"],
        "frozen": frozen,
        "seconds": round(time.perf_counter() - epoch_started, 1),
    }
    return record, metrics


def _select(state: dict[str, Any], metrics: dict[str, float], judged: Detector) -> None:
    """Record an epoch in `state`: a copy of `judged`'s weights when its `metrics` beat the best so
    far, else one more epoch towards `patience`. The copy is detached and on the CPU, so later steps
    neither change it nor hold it in accelerator memory."""
    epoch = state["epoch"]
    if state["best"] is None or _better(metrics, state["best"]):
        state["best"] = {**metrics, "epoch": epoch + 1}
        state["best_model"] = {k: v.detach().cpu().clone() for k, v in judged.state_dict().items()}
        state["stale"] = 0
    else:
        state["stale"] += 1
    state["epoch"] = epoch + 1


def _training_loader(
    cfg: TrainConfig,
    train_faces: pd.DataFrame,
    people: np.ndarray,
    model: Detector,
    margin: float,
    device: str,
) -> DataLoader:
    """Batches of real/fake pairs (of faces, or of clips for a clip model), with the person of each
    (`person_ids`), re-drawn every epoch by the loader's `EpochSampler`."""
    faces_per_draw = _faces_per_draw(cfg)
    partners = real_partners(train_faces, cfg.manifest_path)
    has_partner = partners[train_faces["target"].to_numpy() == 1] != NO_PARTNER
    log.info("%d of %d train fakes paired with their original frame", has_partner.sum(), has_partner.size)
    augment = scaled_augmentation(cfg.augment)
    dataset = TrainingFaces(train_faces, partners, cfg, model.preset, augment, margin, faces_per_draw, people)
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size // faces_per_draw,
        sampler=epoch_sampler(len(dataset), cfg.batch_size // faces_per_draw),
        drop_last=True,
        num_workers=cfg.workers,
        # Spawned, not forked: a fork after torch has run can deadlock. Persistent, so the workers'
        # start-up (importing torch) is paid once, not every epoch.
        multiprocessing_context="spawn" if cfg.workers else None,
        persistent_workers=cfg.workers > 0,
        pin_memory=device.startswith("cuda"),
    )


def _save_trained(
    model: Detector,
    cfg: TrainConfig,
    contract: PreprocessingContract,
    state: dict[str, Any],
    seconds: float,
    device: str,
) -> None:
    """The selected weights, with the config that serves them (contract, aggregation) and the run's
    record (settings, selection, dataset fingerprint), the epoch history and its plot."""
    best = state["best"]
    out_dir = Path(cfg.out_dir)
    world = current_world()
    save_detector(
        model.cpu(),
        out_dir,
        extra_config={
            "contract": contract.to_dict(),
            "contract_hash": contract.hash,
            # A clip model judges each face track as one clip (the predictor's rule for clip models).
            "aggregation": {"frames": "clip" if model.clip_model else "mean"},
            "training": {
                "config": dataclasses.asdict(cfg),
                "best_epoch": best["epoch"],
                "val_video_auc": best["val_video_auc"],
                "val_frame_auc": best["val_frame_auc"],
                "epochs_run": state["epoch"],
                "dataset_fingerprint": _fingerprint(Path(cfg.faces_dir) / FACES_NAME),
                "seconds": round(seconds, 1),
                "device": device,
                "processes": world.size if world is not None else 1,  # global batch: this x batch_size
            },
        },
    )
    (out_dir / HISTORY_NAME).write_text(json.dumps(state["history"], indent=2) + "\n")
    plot_history(state["history"], out_dir / CURVES_NAME)
    save_resolved(cfg, out_dir)


def _check(cfg: TrainConfig) -> None:
    if cfg.frozen_epochs >= cfg.epochs:
        raise ValueError("frozen_epochs must be fewer than epochs: the backbone would never be tuned")
    if cfg.clip_length < 1:
        raise ValueError(f"clip_length must be at least 1, got {cfg.clip_length}")
    draws_per_batch = cfg.batch_size // _faces_per_draw(cfg)
    if draws_per_batch < 2 or draws_per_batch % 2 or cfg.samples_per_epoch < cfg.batch_size:
        raise ValueError(
            "batch_size must hold an even number of draws (whole real/fake pairs of faces, or of clips "
            f"of clip_length faces for a clip model; {draws_per_batch} here), at most samples_per_epoch"
        )
    if cfg.identity_weight < 0:
        raise ValueError(f"identity_weight must be at least 0 (0: no adversary), got {cfg.identity_weight}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise ValueError(f"ema_decay must be within [0, 1) (0: no average), got {cfg.ema_decay}")
    for name in ("sbi_share", "sbi_background_share"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {getattr(cfg, name)}")


def _identity_adversary(
    cfg: TrainConfig, model: Detector, people: np.ndarray, device: str
) -> IdentityAdversary | None:
    """The adversary over the people named in the train split, when `identity_weight` asks for one."""
    if cfg.identity_weight <= 0:
        return None
    named = int(people.max(initial=UNKNOWN_PERSON)) + 1  # people are numbered 0, 1, ...; unknown is -1
    try:
        return IdentityAdversary(model.feature_dim, named, cfg.identity_weight).to(device)
    except ValueError as err:  # the adversary's own rule; this says where the people come from
        raise ValueError(
            f"identity_weight {cfg.identity_weight} needs the manifest ({cfg.manifest_path!r}) to name at "
            f"least 2 people in the train split's real videos: {err}"
        ) from err


def _faces_per_draw(cfg: TrainConfig) -> int:
    return cfg.clip_length if model_class(cfg.model).clip_model else 1


def _build_model(cfg: TrainConfig) -> Detector:
    """A frame detector, or a clip model (`temporal`) over `cfg.frame_model`'s backbone: the models
    whose input a face dataset's crops (and their tracks) can provide."""
    unsupported = f"train_detector trains frame detectors and clip models; {cfg.model!r} is neither"
    # The train section's model-specific keys, passed to the models whose constructor takes them.
    offered = {"pooling": cfg.pooling, "stage": cfg.patch_stage, "head": cfg.head, "hidden": cfg.head_hidden}
    accepted = inspect.signature(model_class(cfg.model)).parameters
    settings = {key: value for key, value in offered.items() if key in accepted}
    try:
        model = crop_detector(cfg.model, cfg.input_size, cfg.channels_last, cfg.frame_model, **settings)
    except ValueError as err:
        raise ValueError(f"{unsupported}: {err}") from err
    if not (model.clip_model or isinstance(model, FrameDetector)):
        raise ValueError(unsupported)
    return model


def _train_epoch(
    run: _Optimisation,
    loader: DataLoader,
    bar: tqdm,
    criterion: torch.nn.Module,
    device: str,
    use_amp: bool,
    blend_map_weight: float,
    grad_clip: float = 0.0,
) -> dict[str, float]:
    """One pass over the epoch's batches; the bar shows the loss of the last 20. The weight average,
    when kept, is updated after every step. Returns the mean detection loss (`train_loss`) and, with
    an adversary, its mean loss at naming people (`identity_loss`: near log(people) when the features
    no longer tell them apart, near 0 when they do)."""
    run.model.train()
    replica = replicate(run.model)  # after this epoch's freezing: DDP syncs what needs gradients now
    losses, identity_losses = [], []
    for images, targets, blend_maps, people in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        blend_maps, people = blend_maps.to(device, non_blocking=True), people.to(device, non_blocking=True)
        loss = train_step(
            replica,
            images,
            targets,
            run.optimizer,
            criterion,
            run.scaler,
            use_amp,
            blend_maps,
            blend_map_weight,
            run.adversary,
            people,
            grad_clip,
        )
        losses.append(loss)
        if run.adversary is not None:
            identity_losses.append(run.adversary.last_loss)
        run.scheduler.step()
        if run.average is not None:
            run.average.update(run.model)
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    means = {"train_loss": round(float(np.mean(losses)), 4)}
    if identity_losses:
        means["identity_loss"] = round(float(np.nanmean(identity_losses)), 4)
    return means


def validation_metrics(model: Detector, faces: pd.DataFrame, device: str = "cpu") -> dict[str, float]:
    """Loss, frame AUC and video AUC of `model` on the faces given. A frame model's video score is the
    mean probability of its frames; a clip model's is its judgement of each track as one clip."""
    scores = score_crop_files(model, faces["crop_path"].tolist(), device=device)
    clips = track_clip_logits(model, faces, scores.embeddings, device) if model.clip_model else None
    return metrics_of_logits(scores.logits, faces, clips)


def metrics_of_logits(
    logits: np.ndarray, faces: pd.DataFrame, video_logits: pd.Series | None = None
) -> dict[str, float]:
    """`validation_metrics` of face logits already computed, one per row of `faces`; `video_logits`
    (indexed by video_id) replaces the mean of each video's frames as its score where given."""
    targets = faces["target"].to_numpy()
    probability = 1.0 / (1.0 + np.exp(-logits))
    per_video = pd.DataFrame({"video_id": faces["video_id"], "p": probability, "y": targets})
    videos = per_video.groupby("video_id").agg(p=("p", "mean"), y=("y", "first"))
    if video_logits is not None:
        videos["p"] = 1.0 / (1.0 + np.exp(-video_logits.reindex(videos.index).to_numpy()))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.from_numpy(logits).double(), torch.from_numpy(targets).double()
    )
    return {
        "val_loss": round(float(loss), 4),
        "val_frame_auc": round(roc_auc(targets, probability), 4),
        "val_video_auc": round(roc_auc(videos["y"], videos["p"]), 4),
    }


def _better(metrics: dict[str, float], best: dict[str, Any]) -> bool:
    if metrics["val_video_auc"] != best["val_video_auc"]:
        return metrics["val_video_auc"] > best["val_video_auc"]
    return metrics["val_loss"] < best["val_loss"]


def _settings_key(cfg: TrainConfig) -> str:
    """Checkpoints of different settings never mix: a resume continues only the same run."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RUN_ONLY_SETTINGS}
    world = current_world()
    if world is not None:  # another number of processes takes other steps: a different run
        settings["processes"] = world.size
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def _fingerprint(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
