"""How many CPU threads a stage uses, chosen from the size of its work, never from the load.

torch's default, one thread per core with OpenMP workers that spin while they wait, is
right for one large job on an idle machine and wrong everywhere else. A tiny step gains
nothing from a second thread and pays a synchronisation on every op; on a busy machine a
spinning worker holds a core that another process needs, and every op then waits a whole
scheduler slice for its partner (a 20-epoch blog run went from 5.5 s to 47 s with the
two cores busy). So:

* a stage whose step is small (under PARALLEL_FLOPS) runs on one thread;
* a larger one uses every core this process may run on;
* OpenMP workers spin only briefly before they sleep (`SPIN_ENV`, set in lora_cli/__init__.py
  before torch loads OpenMP; a value already in the environment wins).

The count depends only on the config and the machine, never on the momentary load, so the
same config gives the same bytes on a busy machine as on an idle one. `--threads N` or
LORA_THREADS=N overrides it. Under torchrun (WORLD_SIZE > 1) each process takes
OMP_NUM_THREADS when set (torchrun sets 1 when it is unset), so N processes share the cores.
"""

from __future__ import annotations

import os

from lora_cli.errors import ConfigError

# GNU OpenMP (torch's CPU wheels): spin this many iterations (~10 µs here) before sleeping.
# bench/bench_contention.py measured 1k, 10k, 50k and the default (300k): 10k kept idle speed
# and kept a busy machine's slowdown lowest.
SPIN_ENV = {"GOMP_SPINCOUNT": "10000"}
# per step (FLOPs plus elements gathered, resources.step_work): below this, one thread is as
# fast and never waits. The smoke config's steps are ~1e5, the blog's rank-1 step ~2e6.
PARALLEL_FLOPS = 5e5


def cores() -> int:
    """CPUs this process may run on (its affinity mask, as taskset or a container sets it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def requested(flag: int | None) -> int | None:
    """--threads when given, else LORA_THREADS when set, else OMP_NUM_THREADS under torchrun,
    else None (choose by work)."""
    if flag is not None:
        return flag
    name = "LORA_THREADS"
    text = os.environ.get(name, "").strip()
    if not text and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        name = "OMP_NUM_THREADS"
        text = os.environ.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{name} = {text!r} is not allowed: must be a whole number ≥ 1 (or unset)")
    return bounded(int(text), name)


OVERSUBSCRIBE = 4  # more threads than this many per CPU only slow every op down (and OpenMP fails far beyond)


def bounded(count: int, name: str) -> int:
    """`count` threads when at most OVERSUBSCRIBE per CPU this process may use; ConfigError otherwise."""
    limit = OVERSUBSCRIBE * cores()
    if count > limit:
        raise ConfigError(
            f"{name} = {count} is out of range: must be ≤ {limit} ({OVERSUBSCRIBE} × the {cores()} CPUs this process may use)"
        )
    return count


def choose(flops_per_step: float, request: int | None = None) -> int:
    """The thread count for work of `flops_per_step`, or `request` when given."""
    if request is not None:
        return request
    return cores() if flops_per_step >= PARALLEL_FLOPS else 1


def use(count: int) -> int:
    """Make torch's CPU kernels use `count` threads from now on; returns it."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
