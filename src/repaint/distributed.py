"""One process or a torchrun group: which part of the work is this process's, and what the processes agree on.

Shared by the evaluation (images split by index, a barrier, rank 0's choices broadcast) and the trainer (data-parallel
steps: loss means and stop decisions reduced over the ranks)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from .accel import resolve_device


@dataclass(frozen=True)
class Shard:
    """This process's place in the group: rank ``rank`` of ``world``, computing on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this process started the process group (and ends it in close())

    @property
    def main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether item ``index`` of a list split round-robin is this process's."""
        return index % self.world == self.rank

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def agree(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if self.world == 1:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def mean(self, values: list[float]) -> list[float]:
        """Each value averaged over the ranks."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return (tensor / self.world).tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank if it is true on any (so all ranks stop, or checkpoint, at the same step)."""
        if self.world == 1:
            return flag
        tensor = torch.tensor([float(flag)], device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return bool(tensor.item())

    def close(self) -> None:
        """Wait for every rank, and end the process group if this process started it."""
        self.barrier()
        if self.owns_group:
            torch.distributed.destroy_process_group()


def shard(device: str | torch.device | None = None, backend: str = "gloo") -> Shard:
    """The shard of this process. ``device`` None or "auto" means ``cuda:LOCAL_RANK`` where CUDA is available, else
    the CPU; "cuda" means ``cuda:LOCAL_RANK``. Under torchrun (WORLD_SIZE > 1) the process group is started here unless
    one exists: ``backend`` "gloo" suits a group that only meets at barriers and broadcasts small objects (the
    evaluation), "nccl" one that reduces CUDA tensors every step (training); the long timeout lets ranks finish
    unevenly."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(resolve_device(device))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist = torch.distributed
    world = int(os.environ.get("WORLD_SIZE", "1"))
    owns = False
    if world > 1 and dist.is_available() and not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(hours=48))
        owns = True
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size(), device, owns)
    return Shard(0, 1, device)
