"""Training a head on frozen, cached features (`clip_frozen`): seconds instead of an hour on a CPU.

The backbone never changes, so each training face is one row of features, read from `dfguard embed`'s
store (computed where missing). The data are the train split's real faces, its dataset fakes
(`use_dataset_fakes`) and the self-blends of its real faces (`sbi`), weighted so that reals and fakes
count the same and self-blends make `sbi_share` of the fakes when both kinds are used. Each epoch is
one weighted draw of as many rows as there are, in batches; after each the head scores the
validation faces (cached as well) and the epoch with the best video AUC is kept, as for every model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional
from tqdm import tqdm

from dfguard.config import EmbedConfig, TrainConfig
from dfguard.models.base import Detector
from dfguard.models.clip_frozen import ClipFrozen, feature_store
from dfguard.training.embed import embed_crop_files, embed_self_blends, read_variants

log = logging.getLogger(__name__)

BATCH = 256


def feature_rows(
    model: ClipFrozen, faces: pd.DataFrame, features_dir: str, progress: str = ""
) -> tuple[list[str], np.ndarray]:
    """(keys, features) of each face's crop, from the store in `features_dir` where held. A crop named
    more than once (the loop's replay mix repeats feedback rows to reach their share) is read once."""
    store = feature_store(Path(features_dir))
    unique, index = np.unique(np.asarray(faces["crop_path"].tolist(), dtype=object), return_inverse=True)
    keys, features = embed_crop_files(model.backbone, unique.tolist(), store, progress=progress)
    return [keys[i] for i in index], features[index]


def training_set(
    cfg: TrainConfig, model: ClipFrozen, faces: pd.DataFrame, margin: float, progress: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, targets, weights) of the rows a head trains on (see the module docstring)."""
    keys, features = feature_rows(model, faces, cfg.features_dir, "train features" if progress else "")
    targets = faces["target"].to_numpy().astype(np.float32)
    real = targets == 0
    parts = [(features[real], np.zeros(real.sum()), "real")]
    if cfg.use_dataset_fakes:
        parts.append((features[~real], np.ones((~real).sum()), "fake"))
    if cfg.sbi:
        store = feature_store(Path(cfg.features_dir))
        real_keys = [key for key, is_real in zip(keys, real, strict=True) if is_real]
        index = read_variants(store.folder)
        listed = index[index["crop_key"].isin(set(real_keys))]
        # As many self-blends per face as `dfguard embed` made for these faces (its default without it).
        variants = int(listed["variant"].max()) + 1 if len(listed) else EmbedConfig.sbi_variants
        blends = embed_self_blends(
            model.backbone,
            faces.loc[real, "crop_path"].tolist(),
            real_keys,
            variants,
            margin,
            store,
            progress="train self-blends" if progress else "",
        )
        parts.append((blends, np.ones(len(blends)), "sbi"))
    if not any(kind != "real" and len(x) for x, _, kind in parts) or not len(parts[0][0]):
        raise ValueError("the train split needs real faces and fakes (dataset fakes or self-blends)")
    fake_share = {"fake": 1.0, "sbi": 1.0}
    kinds = {kind for x, _, kind in parts if len(x)}
    if {"fake", "sbi"} <= kinds:
        fake_share = {"fake": 1.0 - cfg.sbi_share, "sbi": cfg.sbi_share}
    weights = [
        np.full(len(x), (1.0 if kind == "real" else fake_share[kind]) / max(len(x), 1))
        for x, _, kind in parts
    ]
    return (
        np.concatenate([x for x, _, _ in parts]).astype(np.float32),
        np.concatenate([y for _, y, _ in parts]).astype(np.float32),
        np.concatenate(weights),
    )


def train_feature_head(
    cfg: TrainConfig,
    model: Detector,
    train_faces: pd.DataFrame,
    val_faces: pd.DataFrame,
    margin: float,
    metrics_of: Callable[[np.ndarray], dict[str, float]],
    select: Callable[[dict[str, Any], dict[str, float], Detector], None],
    progress: bool = True,
) -> dict[str, Any]:
    """Fit `model`'s head (and its feature standardisation) on cached features; leaves the best
    epoch's weights in `model` and returns the selection state the trainer saves (history, best).
    `metrics_of(val_logits)` gives an epoch's validation metrics and `select` records the epoch in
    the state, both the trainer's, so every model is selected by the same rule. A head started from a
    trained one (`cfg.init_from`, the loop's fine-tune) keeps its standardisation, so its weights keep
    their meaning."""
    if not isinstance(model, ClipFrozen):
        raise ValueError(f"{model.config.get('name')} does not train on cached features")
    torch.manual_seed(cfg.seed)
    x, y, w = training_set(cfg, model, train_faces, margin, progress)
    _, val_x = feature_rows(model, val_faces, cfg.features_dir, "validation features" if progress else "")
    if not cfg.init_from:
        model.standardise_with(x)
    inputs, targets, val_inputs = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(val_x)
    optimizer = torch.optim.AdamW(model.head_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    draw_weights = torch.from_numpy(w)
    state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_model": None, "stale": 0}
    steps = max(1, len(x) // BATCH)
    for epoch in tqdm(range(cfg.head_epochs), desc="head", unit="epoch", disable=not progress):
        started = time.perf_counter()
        model.train()
        order = torch.multinomial(draw_weights, steps * BATCH, replacement=True, generator=generator)
        losses = []
        for batch in order.view(steps, BATCH):
            loss = functional.binary_cross_entropy_with_logits(
                model.judge(inputs[batch]).logits, targets[batch]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
        model.eval()
        with torch.inference_mode():
            val_logits = model.judge(val_inputs).logits.numpy()
        metrics = metrics_of(val_logits)
        record = {
            "epoch": epoch + 1,
            "train_loss": round(float(np.mean(losses)), 4),
            **metrics,
            "lr": cfg.lr,
            "frozen": True,
            "seconds": round(time.perf_counter() - started, 2),
        }
        state["history"].append(record)
        select(state, metrics, model)
    log.info("head: best epoch %d of %d, %s", state["best"]["epoch"], cfg.head_epochs, state["best"])
    model.load_state_dict(state["best_model"])
    return state
