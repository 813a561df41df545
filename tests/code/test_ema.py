"""The weight average (`training.ema`): its ramped decay by hand, its counters and its state. Training
with it: `test_training.py`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dfguard.training.ema import WeightAverage


def test_the_average_ramps_its_decay_and_copies_counters() -> None:
    live = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1))
    nn.init.zeros_(live[0].weight)
    average = WeightAverage(live, decay=0.5)
    nn.init.ones_(live[0].weight)
    live[1].num_batches_tracked.fill_(5)
    average.update(live)  # decay min(0.5, 2 / 11): 9/11 of the way to the live weights
    assert torch.allclose(average.model[0].weight, torch.full((1, 2), 9 / 11))
    assert int(average.model[1].num_batches_tracked) == 5
    average.update(live)  # min(0.5, 3 / 12) = 0.25
    assert torch.allclose(average.model[0].weight, torch.full((1, 2), 0.25 * 9 / 11 + 0.75))
    capped = WeightAverage(nn.Linear(2, 1), decay=0.1)  # below 2 / 11: the cap holds from the start
    nn.init.zeros_(capped.model.weight)
    capped.update(live[0])
    assert torch.allclose(capped.model.weight, torch.full((1, 2), 0.9))
    assert average.updates == 2 and not average.model[0].weight.requires_grad
    restored = WeightAverage(live, decay=0.5)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 2 and torch.equal(restored.model[0].weight, average.model[0].weight)


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_a_decay_outside_the_open_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(2, 1), decay)
