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
    grad_clip: float = 0.0,
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
    `grad_clip` > 0 caps the gradients' total norm: a fine-tune from a trained model on a few new
    faces must not let one odd batch throw the weights far from where they were.
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
    if grad_clip > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.item())
