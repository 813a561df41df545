"""The weight average: its ramped decay by hand, and training that validates, checkpoints, resumes and
saves the average instead of the last step's weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dfguard.config import TrainConfig
from dfguard.models import load_detector
from dfguard.training.checkpoint import load_checkpoint
from dfguard.training.ema import WeightAverage
from dfguard.training.run import _settings_key, train_detector


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


def test_training_validates_and_saves_the_average(face_dataset, tmp_path: Path) -> None:
    cfg = TrainConfig(
        faces_dir=str(face_dataset(tmp_path / "faces")),
        manifest_path="",
        out_dir=str(tmp_path / "model"),
        checkpoint_dir=str(tmp_path / "checkpoints"),
        model="small_cnn",
        input_size=32,
        epochs=2,
        frozen_epochs=1,
        batch_size=8,
        samples_per_epoch=32,
        patience=5,
        ema_decay=0.9,
    )
    judged: list[dict[str, torch.Tensor]] = []
    result = train_detector(
        cfg,
        progress=False,
        on_epoch_end=lambda record, model: judged.append(
            {k: v.detach().clone() for k, v in model.state_dict().items()}
        ),
    )
    saved = load_checkpoint(Path(cfg.checkpoint_dir) / _settings_key(cfg))
    assert saved is not None and saved["ema"]["updates"] == 2 * 32 // 8
    # What the epoch hook (validation) saw is the average, not the live weights the optimiser moved.
    for key, value in judged[-1].items():
        assert torch.equal(value, saved["ema"]["model"][key]), key
    weights = [k for k, v in judged[-1].items() if v.is_floating_point() and k.endswith("weight")]
    assert any(not torch.equal(judged[-1][k], saved["model"][k]) for k in weights)
    model, _ = load_detector(result.model_dir)
    best = judged[result.best_epoch - 1]
    for key, value in model.state_dict().items():
        assert torch.equal(value, best[key]), key
