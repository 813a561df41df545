"""Data-parallel training: `dfguard train` under a real `torchrun --nproc_per_node 2` (Gloo on the CPU;
the same code takes NCCL and a GPU per process on CUDA), the epoch's split between ranks, the check
that stops ranks whose weights drift apart, and what refuses to train as several processes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from dfguard.config import TrainConfig
from dfguard.faces.crops import read_crop
from dfguard.models import load_detector
from dfguard.training.checkpoint import CHECKPOINT_NAME
from dfguard.training.data import draws_per_epoch
from dfguard.training.distributed import PairShard, current_world
from dfguard.training.run import train_detector
from dfguard.transforms import to_batch

SETTINGS = {
    "model": "small_cnn",
    "input_size": 32,
    "epochs": 2,
    "frozen_epochs": 1,
    "batch_size": 8,
    "samples_per_epoch": 32,
    "manifest_path": "",
    "device": "cpu",
}


def _torchrun(script: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`torchrun --standalone --nproc_per_node 2` (a free port of its own), every line of rank r's output
    prefixed `[default<r>]:`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*command, "--tee", "3", *script], cwd=cwd, capture_output=True, text=True, timeout=240
    )


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_share_each_epoch_in_whole_pairs(ranks: int) -> None:
    size = 2 * 17  # 17 pairs: not a multiple of either rank count
    shards = [PairShard(size, rank, ranks) for rank in range(ranks)]
    for shard in shards:
        shard.epoch = 4
    keys = [list(shard) for shard in shards]
    assert all(epoch == 4 for shard in keys for epoch, _ in shard)
    positions = [[position for _, position in shard] for shard in keys]
    # As many draws on every rank (DDP needs the same number of steps), whole pairs, none twice, and
    # together the single-process epoch less the pairs that would leave the ranks unequal.
    assert len({len(shard) for shard in positions}) == 1 and len(shards[0]) == len(positions[0])
    assert all(p[i + 1] == p[i] + 1 and p[i] % 2 == 0 for p in positions for i in range(0, len(p), 2))
    together = sorted(position for shard in positions for position in shard)
    assert together == list(range(2 * (17 // ranks * ranks)))


def test_torchrun_trains_one_model_on_two_processes(tmp_path: Path, face_dataset) -> None:
    faces_dir = face_dataset(tmp_path / "faces", videos_per_split=6, frames=4)
    settings = {**SETTINGS, "faces_dir": str(faces_dir), "checkpoint_dir": str(tmp_path / "checkpoints")}
    flags = [arg for key, value in settings.items() for arg in ("--set", f"train.{key}={value}")]
    out = tmp_path / "model"
    cli = ["-m", "dfguard.cli", "--params", str(tmp_path / "none.yaml"), *flags]
    run = _torchrun([*cli, "train", "--out", str(out), "--no-progress"], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    output = run.stdout + run.stderr

    # Each epoch both ranks trained on half of the single-process epoch, and they ended it with the
    # same weights (the check raises otherwise, see below); rank 0 alone reports.
    report = r"\[default0\]:.* (\d+) ranks trained on (\d+) \+ (\d+) draws and hold the same weights"
    shared = re.findall(report, output)
    single = draws_per_epoch(TrainConfig(**settings))
    assert shared == [("2", str(single // 2), str(single // 2))] * 2
    assert not re.search(r"\[default1\]:.*(INFO|model: )", output), "rank 1 repeated rank 0's report"
    assert len(re.findall(r"\[default0\]:model: ", output)) == 1

    # One model, saved by rank 0, that loads and judges faces; one checkpoint.
    model, config = load_detector(out)
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
    assert config["training"]["processes"] == 2 and config["training"]["epochs_run"] == 2
    assert [p.name for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()] == [CHECKPOINT_NAME]
    history = json.loads((out / "history.json").read_text())
    assert [h["frozen"] for h in history] == [True, False]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    crops = [read_crop(path) for path in sorted((faces_dir / "crops").rglob("*.png"))[:4]]
    with torch.no_grad():
        probability = model.eval()(to_batch(crops, model.preset)).probability
    assert probability.shape == (4,) and bool(((probability > 0) & (probability < 1)).all())


DIVERGING = """
import torch
import torch.distributed as dist
from dfguard.training.distributed import check_in_step, process_group

with process_group("cpu"):
    torch.manual_seed(dist.get_rank())  # each rank its own weights, as if DDP had not synced them
    check_in_step(torch.nn.Linear(4, 1), draws=8)
"""


def test_ranks_whose_weights_drift_apart_are_stopped(tmp_path: Path) -> None:
    (tmp_path / "diverging.py").write_text(DIVERGING)
    run = _torchrun(["diverging.py"], tmp_path)
    assert run.returncode != 0
    assert re.search(r"\[default0\]:.*RuntimeError: the ranks' weights diverged", run.stdout + run.stderr)
    assert re.search(r"\[default1\]:.*RuntimeError: the ranks' weights diverged", run.stdout + run.stderr)


@pytest.fixture
def one_process_group(tmp_path: Path) -> Iterator[None]:
    """A real (Gloo) process group of this process alone: the code takes the data-parallel path."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("change", "message"),
    [({"model": "clip_frozen"}, "cached features"), ({"identity_weight": 0.5}, "identity adversary")],
)
def test_what_trains_as_one_process_only_is_refused_in_a_group(
    one_process_group: None, tmp_path: Path, change: dict, message: str
) -> None:
    cfg = TrainConfig(**{**SETTINGS, "faces_dir": str(tmp_path / "faces"), **change})
    with pytest.raises(ValueError, match=message):
        train_detector(cfg, progress=False)


def test_processes_torchrun_started_outside_a_group_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert current_world() is None
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it, with nothing joining the group
    with pytest.raises(RuntimeError, match="never joined a process group"):
        train_detector(TrainConfig(**{**SETTINGS, "faces_dir": str(tmp_path / "faces")}), progress=False)
