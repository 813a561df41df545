"""Data-parallel training under `torchrun`: one process per device, each training one copy of the model
(DistributedDataParallel averages their gradients every step) on its own share of each epoch.

`torchrun --nproc_per_node N -m dfguard.cli train` starts N processes with WORLD_SIZE, RANK and
LOCAL_RANK set; `process_group` (entered by the command) joins them, over NCCL with one GPU each
(cuda:LOCAL_RANK) or over Gloo on CPUs. Every rank draws the same epoch (same seed) and trains on
its share of the real/fake pairs (`PairShard`); everything with an effect outside the process
(validation and model selection, checkpoints, the saved model, logs, progress bars) happens on rank 0,
whose decisions the others receive (`from_main`). Without torchrun's variables every helper here is a
no-op and training runs as one process.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dfguard.config import TrainConfig
from dfguard.models import model_class
from dfguard.runtime import default_device
from dfguard.training.data import EpochSampler

log = logging.getLogger(__name__)

T = TypeVar("T")

# The other ranks wait at a collective while rank 0 validates, checkpoints and runs the epoch hook;
# NCCL's default (10 minutes) is too short for a large validation split on one device.
TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """This process's place among those training together, and the device it trains on."""

    rank: int
    size: int
    device: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def _launched_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def process_group(requested_device: str = "") -> Iterator[World | None]:
    """Join the processes torchrun started (None, and nothing done, for a single process) and leave the
    group on the way out. On CUDA each process takes GPU LOCAL_RANK, whatever `requested_device` names;
    ranks other than 0 log warnings only, so the operator reads one account of the run."""
    if _launched_size() < 2:
        yield None
        return
    device = default_device(requested_device)
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=TIMEOUT, device_id=torch.device(device))
    else:
        dist.init_process_group("gloo", timeout=TIMEOUT)
    if dist.get_rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield current_world()
    finally:
        dist.destroy_process_group()


def current_world() -> World | None:
    """The group this process trains in (`process_group`), or None when it trains alone.

    Raises RuntimeError when torchrun started several processes that never joined a group: each would
    train the whole model alone and write the same files."""
    if dist.is_available() and dist.is_initialized():
        cuda = dist.get_backend() == "nccl"
        device = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
        return World(dist.get_rank(), dist.get_world_size(), device)
    if _launched_size() > 1:
        raise RuntimeError(
            f"torchrun started {_launched_size()} processes but they never joined a process group: "
            "train through `dfguard train`, which joins them"
        )
    return None


def is_main() -> bool:
    """Whether this process does the run's side effects: rank 0, or the only process."""
    world = current_world()
    return world is None or world.main


def training_device(requested: str) -> str:
    """This rank's device under torchrun, else `requested` (or the default device)."""
    world = current_world()
    return world.device if world is not None else default_device(requested)


def refuse_unsupported(cfg: TrainConfig) -> None:
    """Raise ValueError for settings that train as one process only, when there are several."""
    world = current_world()
    if world is None:
        return
    if getattr(model_class(cfg.model), "trains_on_features", False):
        raise ValueError(
            f"{cfg.model} trains a head on cached features, in seconds on one process; run `dfguard "
            f"train` without torchrun (it was started as {world.size} processes)"
        )
    if cfg.identity_weight > 0:
        # The adversary's loss is computed outside the model's forward pass, where DDP does not see
        # it: its weights would drift apart between ranks.
        raise ValueError("the identity adversary (identity_weight > 0) trains as one process only")


class PairShard(EpochSampler):
    """A rank's share of each epoch's draws: real/fake pair k (positions 2k and 2k + 1) goes to rank
    k % size, so every rank's batches stay class-balanced and, over the ranks, the epoch is the one a
    single process draws. Every rank gets as many pairs (the remainder is left out): DDP needs the
    ranks to take the same number of steps."""

    def __init__(self, size: int, rank: int, ranks: int) -> None:
        super().__init__(size)
        pairs = size // 2 // ranks
        self.positions = [p for k in range(rank, pairs * ranks, ranks) for p in (2 * k, 2 * k + 1)]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, position) for position in self.positions)

    def __len__(self) -> int:
        return len(self.positions)


def epoch_sampler(size: int, batch: int) -> EpochSampler:
    """The sampler of an epoch of `size` draws: all of them for one process, this rank's `PairShard`
    under torchrun. Raises ValueError when a rank's share would not fill one batch of `batch` draws."""
    world = current_world()
    if world is None:
        return EpochSampler(size)
    shard = PairShard(size, world.rank, world.size)
    if len(shard) < batch:
        raise ValueError(
            f"an epoch of {size} draws shared by {world.size} processes leaves {len(shard)} each, "
            f"fewer than a batch of {batch}: raise samples_per_epoch"
        )
    return shard


def replicate(model: nn.Module) -> nn.Module:
    """`model` wrapped to average its gradients over the ranks (or `model` itself, alone). Made again
    each epoch: DDP syncs the parameters that need gradients when it is made, and the warm-up
    freezes and then frees the backbone."""
    world = current_world()
    if world is None:
        return model
    ids = [torch.device(world.device).index] if world.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (each rank took the same number of steps), rounded as
    the single-process figures are."""
    world = current_world()
    if world is None:
        return values
    summed = torch.tensor(list(values.values()), dtype=torch.float64, device=world.device)
    dist.all_reduce(summed)
    return {key: round(float(v) / world.size, 4) for key, v in zip(values, summed.tolist(), strict=True)}


def from_main(compute: Callable[[], T]) -> T:
    """`compute()` run on rank 0 only, its result sent to every rank: work that must happen once
    (validation, reading a checkpoint only rank 0 may hold) and whose outcome all must act on."""
    world = current_world()
    if world is None:
        return compute()
    box = [compute() if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def check_in_step(model: nn.Module, draws: int) -> None:
    """After an epoch: raise RuntimeError unless every rank holds the same parameters (bit for bit, as
    DDP promises), and log, on rank 0, how many draws each rank trained on. BatchNorm statistics are
    left out: DDP gives every forward pass rank 0's, and each rank's last step moves its own."""
    world = current_world()
    if world is None:
        return
    digest = hashlib.sha256()
    for param in model.parameters():
        digest.update(param.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    reports: list[tuple[str, int]] = [("", 0)] * world.size  # filled with every rank's, in rank order
    dist.all_gather_object(reports, (digest.hexdigest(), draws))
    digests = [rank_digest for rank_digest, _ in reports]
    if len(set(digests)) > 1:
        raise RuntimeError(f"the ranks' weights diverged: parameter digests {[d[:12] for d in digests]}")
    if world.main:
        counts = " + ".join(str(count) for _, count in reports)
        log.info(
            "%d ranks trained on %s draws and hold the same weights (%s)", world.size, counts, digests[0][:12]
        )


def barrier() -> None:
    """Wait for every rank (nothing alone): the others wait here while rank 0 saves."""
    if current_world() is not None:
        dist.barrier()
