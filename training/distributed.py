"""Several processes on one job: ``torchrun --nproc_per_node N -m training ...``.

Each process holds one base copy, takes 1/N of every batch, and DistributedDataParallel
averages the LoRA gradients (gloo on CPU, nccl on CUDA). Only the trainable adapter weights
are synchronised: the frozen base is loaded identically by every process and never moves.
Rank 0 evaluates, registers and prints; the others wait for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    # Whether this World joined the process group, and so closes it: a run inside
    # ``run-job`` finds the group already joined by the job and leaves it open for the next
    # stage of a round.
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's rows of a global batch (rank, rank + size, ...)."""
        return list(items[self.rank :: self.size])

    def mean(self, value: float) -> float:
        """Mean of a float over the processes."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t)
        return t.item() / self.size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def init_world(device: torch.device) -> World:
    """Join the process group when launched by torchrun; a single process otherwise."""
    if not dist.is_torchelastic_launched():
        return World()
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    world = World(rank=dist.get_rank(), size=dist.get_world_size(), owns_group=joined)
    log.info("process %s of %s", world.rank, world.size)
    return world


def close_world(world: World) -> None:
    """If this World joined the group: wait for every process, then leave it. A World that
    found the group joined (a stage of ``run-job``) leaves both to its owner: a rank that
    stops early must not wait in a barrier while the others are in another collective."""
    if world.distributed and world.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def data_parallel(module: nn.Module, world: World) -> nn.Module:
    """``module`` wrapped in DDP over its trainable parameters (itself on one process)."""
    if not world.distributed:
        return module
    frozen = [name for name, p in module.named_parameters() if not p.requires_grad]
    frozen += [name for name, _ in module.named_buffers()]  # rotary tables: identical everywhere
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, frozen)
    return DistributedDataParallel(module)


def check_in_sync(params: Sequence[torch.Tensor], world: World) -> None:
    """Assert every process holds the same trainable weights (DDP's invariant)."""
    if not world.distributed:
        return
    local = torch.stack([p.detach().double().sum() for p in params]).sum().reshape(1)
    gathered = [torch.zeros_like(local) for _ in range(world.size)]
    dist.all_gather(gathered, local)
    spread = (torch.cat(gathered) - local).abs().max().item()
    assert spread <= 1e-6 * max(1.0, local.abs().item()), f"ranks diverged: {gathered}"
