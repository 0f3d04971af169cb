"""Several processes under torchrun: which one this is, the process group, and sharing work.

torchrun (`torchrun --nproc-per-node N -m lora_cli …`) sets WORLD_SIZE, RANK, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT for each process it starts. Without them lora is one process and
nothing here touches torch.distributed. With them, the commands that can share work
(`pretrain`, `run`, `sweep`) open the process group once (gloo on CPU, NCCL on CUDA, with a
timeout that is set: $LORA_DIST_TIMEOUT seconds, default 300) and close it in a `finally`;
the other commands refuse in one line. Rank 0 writes the run folder and prints; the other
ranks print nothing but their own error, which names the rank. When a rank fails it exits
non-zero and torchrun stops the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from lora_cli.errors import ConfigError, RunError

TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "LORA_DIST_TIMEOUT", 300.0
SHARED_COMMANDS = ("pretrain", "run", "sweep")  # the commands that can share work


@dataclass(frozen=True)
class World:
    """This process's place among the processes torchrun started (one process: 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's contiguous share of a batch's rows: the first batch_size % size ranks
        get one row more, so shares differ by at most one."""
        base, extra = divmod(batch_size, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def from_env() -> World:
    """The World torchrun describes in the environment; one process when it describes none."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers, as torchrun sets them ({exc})") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK={rank} of WORLD_SIZE={size}: not a process torchrun could start; launch with torchrun")
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if size > 1 and not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE={size} is set, but not by torchrun (no {' or '.join(missing)}); start the command with torchrun, "
            "or unset WORLD_SIZE to run in one process"
        )
    return World(rank, size, local)


def timeout_seconds() -> float:
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"${TIMEOUT_ENV}={text!r}: must be a number of seconds above 0")
    return value


@contextmanager
def session(device: str) -> Iterator[World]:
    """The process group for this command, opened once and destroyed however the command ends."""
    world = from_env()
    if world.size == 1:
        yield world
        return
    import torch
    import torch.distributed as dist

    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))
    try:
        yield world
    finally:
        dist.destroy_process_group()


def refuse_unshared(command: str) -> None:
    """One line for a command that cannot share work, when started by torchrun."""
    world = from_env()
    if world.size > 1 and command not in SHARED_COMMANDS:
        raise ConfigError(
            f"lora {command} runs in one process; start it without torchrun (only {', '.join(SHARED_COMMANDS)} share work over processes)"
        )


@contextmanager
def _collective(world: World) -> Iterator[None]:
    """A collective that fails because another rank stopped (or never came) is worded as that,
    not as a bug: that rank's own error says why."""
    try:
        yield
    except RuntimeError as exc:  # gloo and NCCL raise RuntimeError (DistBackendError) subclasses
        text = str(exc).lower()
        if "timed out" in text or "timeout" in text:
            what = f"waited {timeout_seconds():.0f} s (${TIMEOUT_ENV}) for the other processes, which did not come"
        else:
            what = "lost touch with the other processes (one of them stopped)"
        others = "rank 0's" if world.rank else "the other rank's"
        raise RunError(f"{what}; {others} own error says why, and this process stops too") from None


def all_reduce_(tensor: Any, world: World) -> Any:
    """Sum `tensor` over the ranks, in place (nothing to do in one process)."""
    if world.size > 1:
        import torch.distributed as dist

        with _collective(world):
            dist.all_reduce(tensor)
    return tensor


def broadcast(value: Any, world: World) -> Any:
    """Rank 0's `value` on every rank (a picklable object)."""
    if world.size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    with _collective(world):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    """Wait until every rank gets here (nothing to do in one process)."""
    if world.size > 1:
        import torch.distributed as dist

        with _collective(world):
            dist.barrier()


def shard(costs: list[float], size: int) -> list[int]:
    """The rank for each piece of work: longest first onto the least-loaded rank (ties to the
    lower rank), so every process computes the same balanced assignment."""
    loads, owner = [0.0] * size, [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(size), key=lambda r: (loads[r], r))
        owner[i], loads[rank] = rank, loads[rank] + costs[i]
    return owner
