"""One optimisation step on every registered detector, fed real training samples; and the focal loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dfguard.config import TrainConfig
from dfguard.models import get_model, list_models
from dfguard.training.data import NO_PARTNER, TrainingFaces, load_faces
from dfguard.training.losses import FocalLoss, blend_map_loss, loss_function
from dfguard.training.step import train_step
from dfguard.transforms import AugmentConfig

SIZE = 32
SMALL = {"name": "small_cnn", "kwargs": {"input_size": SIZE, "widths": [8, 16]}}
# Every registered model, built small and without its ImageNet weights (a step moves any weights); a
# model registered later must be added here to be tested.
MODELS: dict[str, dict[str, Any]] = {
    "efficientnet_lite0": {"input_size": SIZE, "pretrained": False},
    "blend_map": {"input_size": SIZE, "pretrained": False},
    "patch": {"input_size": SIZE, "pretrained": False},
    "mobilenet_v2": {"input_size": SIZE, "pretrained": False},
    "resnet50": {"input_size": SIZE},
    "small_cnn": SMALL["kwargs"],
    "clip_vit_b16": {"input_size": SIZE, "pretrained": False, "tune_backbone": True},
    "clip_frozen": {"head": "mlp", "hidden": 8},  # its backbone is the INT8 graph: nothing to move there
    "temporal": {"frame_model": SMALL, "pooling": "attention", "hidden": 8},
    "composed": {"base": SMALL},  # the loop fits its experts; a step still trains the base beneath
    "ensemble": {
        "members": [SMALL, {"name": "mobilenet_v2", "kwargs": {"input_size": SIZE, "pretrained": False}}]
    },
}
CLIP_FRAMES = 3


def test_the_step_test_covers_every_registered_model() -> None:
    assert set(MODELS) == set(list_models())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_training_step_gives_a_finite_loss_and_moves_backbone_and_head(
    name: str, tmp_path: Path, face_dataset
) -> None:
    torch.manual_seed(0)
    model = get_model(name, **MODELS[name])
    faces = load_faces(face_dataset(tmp_path / "faces"), "train")
    cfg = TrainConfig(samples_per_epoch=2 * CLIP_FRAMES * 2)
    samples = TrainingFaces(faces, np.full(len(faces), NO_PARTNER), cfg, model.preset, AugmentConfig(), 1.3)
    images, targets, maps, _ = zip(*(samples[(0, i)] for i in range(len(samples))), strict=True)
    inputs, labels, blend_maps = torch.stack(images), torch.stack(targets), torch.stack(maps)
    if name == "temporal":  # clips of consecutive samples: real, fake, real -> then fake, real, fake
        inputs, labels = inputs.view(-1, CLIP_FRAMES, 3, SIZE, SIZE), torch.tensor([0.0, 1.0, 0.0, 1.0])
        blend_maps = None
    before = {key: value.clone() for key, value in model.state_dict().items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    criterion = loss_function("bce")
    loss = train_step(model.train(), inputs, labels, optimizer, criterion, scaler, False, blend_maps)
    assert np.isfinite(loss) and loss > 0
    after = model.state_dict()
    parts = {
        "blend_map": ("backbone.", "head.", "map_head."),
        "clip_frozen": ("head.",),
        "composed": ("base.backbone.", "base.head."),
    }.get(name, ("backbone.", "head."))
    for part in parts:
        moved = [k for k in before if k.startswith(part) and not torch.equal(before[k], after[k])]
        assert moved, f"{name}: no {part[:-1]} weight changed"


def test_focal_loss_weights_hard_examples_more() -> None:
    focal, targets = FocalLoss(2.0), torch.tensor([1.0])
    easy, hard = focal(torch.tensor([4.0]), targets), focal(torch.tensor([-1.0]), targets)
    bce = torch.nn.BCEWithLogitsLoss()
    assert hard / easy > bce(torch.tensor([-1.0]), targets) / bce(torch.tensor([4.0]), targets)
    with pytest.raises(ValueError, match="loss"):
        loss_function("hinge")


def test_blend_map_loss_averages_the_mask_down_to_the_map() -> None:
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1.0  # the top-left cell of a 2x2 map is fully pasted, the rest untouched
    mask[0, 2, 2] = 1.0  # a quarter of the bottom-right cell
    logits = torch.zeros(1, 2, 2)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor([[[1.0, 0.0], [0.0, 0.25]]])
    )
    torch.testing.assert_close(blend_map_loss(logits, mask), expected)
    # BCE against a soft target is lowest at the target's own log-odds.
    best = torch.logit(torch.tensor([[[0.999, 0.001], [0.001, 0.25]]]))
    assert blend_map_loss(best, mask) < blend_map_loss(logits, mask)


def test_the_map_loss_counts_only_when_weighted() -> None:
    torch.manual_seed(0)
    inputs, labels = torch.randn(2, 3, SIZE, SIZE), torch.tensor([0.0, 1.0])
    maps = torch.ones(2, SIZE, SIZE)
    losses = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(1)
        model = get_model("blend_map", **MODELS["blend_map"]).eval()  # eval: no dropout, same BatchNorm
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        losses[weight] = train_step(
            model, inputs, labels, optimizer, loss_function("bce"), scaler, False, maps, weight
        )
    assert losses[1.0] > losses[0.0] > 0
