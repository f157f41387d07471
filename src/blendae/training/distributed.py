"""torchrun / DistributedDataParallel helpers: one process per rank, rank 0 writes."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from blendae.errors import BlendaeError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TIMEOUT = timedelta(minutes=10)  # a collective that waits longer means a rank died or hung


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """Rank 0, or the only process; readable before and after the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device: str) -> DistContext:
    """Join the process group when started by torchrun (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "cuda" and not torch.cuda.is_available():
        raise BlendaeError(
            "--device cuda asked for, but no CUDA device is visible; use --device cpu"
        )
    if world_size == 1:
        return DistContext(0, 1, torch.device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
        # Each rank gets its share of the cores instead of all ranks fighting over all of them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
        if os.environ.get("MASTER_ADDR", "127.0.0.1") in LOOPBACK:
            # All ranks on this machine: keep gloo on the loopback interface. Its own pick
            # can be an interface that refuses local connections (seen in sandboxes), and
            # then the rendezvous hangs instead of failing.
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo" if sys.platform == "linux" else "lo0")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=TIMEOUT)
    return DistContext(rank, world_size, dev)


def all_sum(value: float, ctx: DistContext) -> float:
    """Sum a Python float over ranks (identity in one process)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return float(t.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.barrier()  # no rank tears down while another still talks to it
        dist.destroy_process_group()
