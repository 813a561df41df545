"""One optimisation step, shared by every detector kind (frames or clips): the unit the training loop
repeats and the tests exercise on each registered model."""

from __future__ import annotations

import torch

from dfguard.models.base import Detector
from dfguard.training.identity import IdentityAdversary
from dfguard.training.losses import blend_map_loss


def train_step(
    model: Detector,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    criterion: torch.nn.Module,
    scaler: torch.amp.GradScaler,
    use_amp: bool = False,
    blend_maps: torch.Tensor | None = None,
    blend_map_weight: float = 1.0,
    adversary: IdentityAdversary | None = None,
    people: torch.Tensor | None = None,
) -> float:
    """Forward, loss, backward and update on one batch; returns the batch's detection loss.

    A model that outputs a manipulation map is also taught where the blend is (`blend_maps`, the
    pasted share of each pixel), with `blend_map_weight` times that loss added: the supervision that
    points it at blending evidence instead of at who is in the picture (Li et al., Face X-ray, 2020).
    Under `use_amp` the forward pass runs in float16 on CUDA and `scaler` keeps small gradients from
    underflowing; the loss itself is computed in float32 either way.
    With an `adversary` (whose parameters `optimizer` must hold too), its loss at naming `people` from
    the features is added: it learns from it while the backbone is pushed the other way. It is left
    out of the returned loss, which then stays comparable between runs with and without one.
    """
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
        out = model(inputs)
    loss = criterion(out.logits.float(), targets)
    if out.blend_map is not None and blend_maps is not None and blend_map_weight > 0:
        loss = loss + blend_map_weight * blend_map_loss(out.blend_map, blend_maps)
    total = loss
    if adversary is not None and people is not None:
        total = total + adversary.loss(out.features, people)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.item())
