"""An exponential moving average of a model's weights (Polyak averaging), validated and saved in place
of the last step's weights.

With a few dozen people the weights after any one step carry that step's batch; the average over
the last few hundred steps is a flatter, less fitted solution, which usually ranks and calibrates
unseen data better than the weights it averages.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """The average model (`model`), updated after each optimiser step by `update(live_model)`.

    The decay ramps up as (1 + n) / (10 + n) over the first updates (n = updates so far), capped at
    `decay`: a fixed decay from the first step would keep the freshly initialised head for hundreds of
    steps. Integer buffers (batch-norm counters) are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be within (0, 1), got {decay}")
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(
            self.model.state_dict().values(), live.state_dict().values(), strict=True
        ):
            if average.is_floating_point():
                average.lerp_(current.to(average.dtype), 1.0 - decay)
            else:
                average.copy_(current)

    def state_dict(self) -> dict[str, object]:
        return {"model": self.model.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.model.load_state_dict(state["model"])  # type: ignore[arg-type]
        self.updates = int(state["updates"])  # type: ignore[call-overload]
