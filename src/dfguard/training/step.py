"""One optimisation step, shared by every detector kind (frames or clips): the unit the training loop
repeats and the tests exercise on each registered model."""

from __future__ import annotations

import torch

from dfguard.models.base import Detector


def train_step(
    model: Detector,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    criterion: torch.nn.Module,
    scaler: torch.amp.GradScaler,
    use_amp: bool = False,
) -> float:
    """Forward, loss, backward and update on one batch; returns the batch loss.

    Under `use_amp` the forward pass runs in float16 on CUDA and `scaler` keeps small gradients from
    underflowing; the loss itself is computed in float32 either way.
    """
    with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
        logits = model(inputs).logits
    loss = criterion(logits.float(), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.item())
