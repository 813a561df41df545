"""`dfguard ensemble`: trained frame detectors combined by the `ensemble` model's gate, fitted on the
validation split with the members frozen.

Members are model folders written by `dfguard train` on the same face dataset (one preprocessing
contract, one input size). The result is an ordinary model folder: `dfguard calibrate`, `evaluate`,
`detect` and the registry take it like any other.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dfguard.faces.crops import read_crop
from dfguard.models import get_model, load_detector, save_detector
from dfguard.models.ensemble import EnsembleDetector
from dfguard.models.weights import initial_weights_skipped
from dfguard.training.data import load_faces
from dfguard.training.run import metrics_of_logits
from dfguard.transforms import to_batch

log = logging.getLogger(__name__)
BATCH = 64


@dataclass(frozen=True)
class EnsembleResult:
    model_dir: Path
    val_video_auc: float  # of the gated ensemble
    member_val_video_auc: list[float]
    val_loss_average: float  # face-level BCE of the plain mean of the members' logits
    val_loss_gated: float  # the same after fitting the gate
    mean_member_weight: list[float]  # the gate's average trust in each member on validation


def build_ensemble(
    member_dirs: Sequence[str | Path], faces_dir: str | Path, out_dir: str | Path, steps: int = 300
) -> EnsembleResult:
    """Combine the trained members, fit the gate on the validation faces and save the ensemble."""
    if len(member_dirs) < 2:
        raise ValueError("an ensemble needs at least two trained model folders")
    members = [load_detector(folder) for folder in member_dirs]
    hashes = [config.get("contract_hash") for _, config in members]
    if len(set(hashes)) != 1 or hashes[0] is None:
        found = ", ".join(f"{folder}: {h}" for folder, h in zip(member_dirs, hashes, strict=True))
        raise ValueError(f"the members must share one preprocessing contract (face dataset), got {found}")
    with initial_weights_skipped():  # every weight comes from the members' folders
        ensemble = get_model("ensemble", members=[config["model"] for _, config in members])
    if not isinstance(ensemble, EnsembleDetector):
        raise TypeError(f"the registered 'ensemble' is a {type(ensemble).__name__}")
    for slot, (member, _) in zip(ensemble.backbone, members, strict=True):
        slot.load_state_dict(member.state_dict())
    ensemble.eval()

    val = load_faces(faces_dir, "val")
    if val.empty or val["target"].nunique() < 2:
        raise ValueError(f"{faces_dir}: the validation split needs real and fake faces to fit the gate")
    logits, features = _member_outputs(ensemble, val["crop_path"].tolist())
    labels = torch.from_numpy(val["target"].to_numpy()).float()
    average = nn.functional.binary_cross_entropy_with_logits(logits.mean(dim=1), labels)
    gated = ensemble.fit_gate(logits, features, labels, steps=steps)
    ensemble.eval()
    with torch.no_grad():
        weights = ensemble.head.member_weights(logits, features).mean(dim=0).tolist()
        combined = ensemble.head(logits, features)
    log.info("gate fitted on %d validation faces: BCE %.4f (mean logit) -> %.4f", len(val), average, gated)

    member_aucs = [metrics_of_logits(column.numpy(), val)["val_video_auc"] for column in logits.T]
    ensemble_auc = metrics_of_logits(combined.numpy(), val)["val_video_auc"]
    average_loss, gated_loss = round(float(average), 6), round(gated, 6)
    first_config = members[0][1]
    save_detector(
        ensemble,
        out_dir,
        extra_config={
            "contract": first_config["contract"],
            "contract_hash": first_config["contract_hash"],
            "aggregation": first_config.get("aggregation", {"frames": "mean"}),
            "ensemble": {
                "members": [str(folder) for folder in member_dirs],
                "member_val_video_auc": member_aucs,
                "val_video_auc": ensemble_auc,
                "val_loss_average": average_loss,
                "val_loss_gated": gated_loss,
                "mean_member_weight": [round(w, 4) for w in weights],
            },
        },
    )
    return EnsembleResult(Path(out_dir), ensemble_auc, member_aucs, average_loss, gated_loss, weights)


def _member_outputs(ensemble: EnsembleDetector, paths: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) member logits and (N, sum D) member features of the crops, a batch at a time."""
    logits, features = [], []
    with torch.inference_mode():
        for start in range(0, len(paths), BATCH):
            batch = to_batch([read_crop(p) for p in paths[start : start + BATCH]], ensemble.preset)
            batch_logits, batch_features = ensemble.member_outputs(batch)
            logits.append(batch_logits)
            features.append(batch_features)
    # Plain tensors again: fitting the gate needs autograd on its own parameters.
    return torch.cat(logits).clone(), torch.cat(features).clone()
