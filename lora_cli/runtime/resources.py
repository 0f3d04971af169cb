"""Memory a stage will need, estimated from its config before anything is allocated.

Counts the float32 tensors each stage holds at its peak (data, weights, Adam state and
the full-data evaluation's temporary), so an impossible config is refused with a clear
message instead of the operating system killing the process halfway.
"""

from __future__ import annotations

import os

from lora_cli.config.schemas import ApproxConfig, Config
from lora_cli.config.stages import ADAPTED, BASE_STAGE, STAGES, Stage
from lora_cli.errors import LoraError
from lora_cli.methods.registry import method_of

FLOAT = 4  # bytes


class ResourceError(LoraError):
    """The machine cannot hold what the config asks for."""


def stage_bytes(cfg: Config | ApproxConfig, stage: str) -> dict[str, int]:
    """Bytes by purpose at the stage's peak."""
    if isinstance(cfg, ApproxConfig):
        d, k, r = cfg.d_in, cfg.d_out, cfg.rank
        return {"target and product": 3 * d * k * FLOAT, "factors and Adam state": 8 * r * (d + k) * FLOAT}
    declared = _declared(stage)
    n, d_in, d_out = cfg.rows(stage if declared.trains else ADAPTED), cfg.data.d_in, cfg.data.d_out
    weight, rows = d_in * d_out * FLOAT, n * (d_in + d_out) * FLOAT
    if not declared.trains:  # the merge: θ, θ2, X2, y2; W, ΔW, W'; three (n, d_out) outputs
        return {"data (θ, θ2, X2, y2)": 2 * weight + rows, "weights": 3 * weight, "outputs": 3 * n * d_out * FLOAT}
    trained = 4 * _trained_count(cfg, stage) * FLOAT  # what trains, its gradient and Adam's two moments
    test = 2 * cfg.data.n_test * (d_in + d_out) * FLOAT  # held-out X, y (and R)
    if declared.on_base:  # θ, θ2, X2, y2, [X2 | R]; the frozen base
        data = {"data (θ, θ2, X2, y2, [X2 | R])": 2 * weight + 2 * rows, "frozen base": weight, "trained tensors and Adam state": trained}
    else:  # θ, X, y; a fresh W with its gradient and Adam state
        data = {"data (θ, X, y)": weight + rows, "weights and Adam state": trained}
    return {**data, "evaluation": n * d_out * FLOAT, "test rows": test}  # X·Wᵀ − y when evaluating


def step_work(cfg: Config | ApproxConfig, stage: str) -> float:
    """FLOPs plus elements gathered in one step of the stage (merge: its one full-data product).

    lora_cli/runtime/threads.py gives work under its PARALLEL_FLOPS one thread. The gather counts: at
    the blog's size a rank-1 step is only 1.5 MFLOP, yet its 128-row gather (1 MB) runs 1.4x
    faster on two threads.
    """
    if isinstance(cfg, ApproxConfig):  # A·B, its two gradients, Adam over both factors
        return 6.0 * cfg.d_in * cfg.rank * cfg.d_out
    declared = _declared(stage)
    n, d_in, d_out = cfg.rows(ADAPTED), cfg.data.d_in, cfg.data.d_out
    if not declared.trains:
        return 2.0 * n * d_in * d_out  # merge: X2 · W'ᵀ over the shifted data
    spec, b = declared.spec(cfg), declared.section(cfg).batch_size  # the method's products and the batch's gather
    return method_of(spec).step_flops(spec, b, d_in, d_out) + b * (d_in + d_out)


def _declared(stage: str) -> Stage:
    if stage not in STAGES:
        raise ValueError(f"no memory or step estimate for a stage named {stage!r}")
    return STAGES[stage]


def _trained_count(cfg: Config, stage: str) -> int:
    """Numbers the stage's method trains."""
    spec = STAGES[stage].spec(cfg)
    return method_of(spec).parameter_count(spec, cfg.data.d_in, cfg.data.d_out)


def available_bytes() -> int | None:
    """Memory available to a new allocation now (Linux MemAvailable), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(cfg: Config | ApproxConfig, stage: str, available: int | None = None) -> int:
    """Raise ResourceError when the stage needs more than 90 % of the available memory.

    Returns the estimate in bytes.
    """
    parts = stage_bytes(cfg, stage)
    need = sum(parts.values())
    have = available_bytes() if available is None else available
    if have is not None and need > 0.9 * have:
        biggest = max(parts, key=parts.get)
        raise ResourceError(
            f"{stage} needs about {_size(need)} of memory ({biggest}: {_size(parts[biggest])}) but only "
            f"{_size(have)} is available; lower data.n, data.d_in or data.d_out (or the approx sizes)"
        )
    return need


def _size(n: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.1f} {units[i]}"


# Rates for `lora sweep --dry-run` and for sharing groups over torchrun's processes, fitted to
# bench/bench_estimate.py on the 2-core Xeon these notes come from (2 threads) at d = 96, 512
# and 1001. A step costs an overhead, a pass over its batch's elements (rows gathered and
# streamed: b·(d_in + d_out)) and its GEMMs (8·b·Σrank·(d_in + d_out) FLOPs); a group adds one
# draw of its data. An estimate, said to be one: within 2x of measured at those sizes.
STEP_COSTS = {  # engine: (seconds a step, seconds per batch element, FLOP/s)
    "batched": (25e-6, 0.65e-9, 3e11),
    "fast": (18e-6, 0.81e-9, 8e10),
    "reference": (305e-6, 7.1e-9, 1e10),  # autograd; DoRA trains here
}
SETUP_PER_ELEMENT = 1.2e-8  # seconds per element of n·(d_in + d_out): the group's data, drawn once


def group_estimate(cfgs: list[Config], engine: str) -> tuple[int, float]:
    """(bytes at the peak, seconds) to train one sweep group of trials sharing data and schedule
    on `engine` ("batched", or an entry of train/engines.ENGINES: one trial alone)."""
    first = cfgs[0]
    n, d_in, d_out = first.rows(ADAPTED), first.data.d_in, first.data.d_out
    parts = stage_bytes(first, ADAPTED)
    data = sum(parts.values()) - parts["trained tensors and Adam state"]  # the group's own: every trial's below
    adapters = sum(4 * _trained_count(cfg, ADAPTED) * FLOAT for cfg in cfgs)  # parameters, gradient, Adam's two moments
    batched = engine == "batched"
    moments = 8 * d_in * (d_in + d_out) if batched else 0  # float64 XᵀX and XᵀR
    ft = first.finetune
    steps = ft.epochs * (n // ft.batch_size)
    overhead, per_element, rate = STEP_COSTS.get(engine, STEP_COSTS["reference"])
    elements = ft.batch_size * (d_in + d_out)
    specs = [cfg.adapter.spec() for cfg in cfgs]
    flops = sum(method_of(spec).step_flops(spec, ft.batch_size, d_in, d_out) for spec in specs) * 8 / 6  # fitted as 8·b·Σr·(d_in + d_out)
    step = overhead + per_element * elements + flops / rate
    return data + adapters + moments, steps * step + SETUP_PER_ELEMENT * n * (d_in + d_out)


# The rest of a sweep, fitted on this session's AMD EPYC (2 threads) at the shipped sweeps'
# size (n = 4096, 256 -> 256): dense pretraining GEMMs run near 2e11 FLOP/s on the fast
# engine (0.93 s for the 3,200 steps of a 256 -> 256 base); float64 optima cost their moments;
# a process pays its start (torch, the spec, the folders) and matplotlib its figures.
PRETRAIN_FLOPS = 2e11
OPTIMUM_FLOPS = 3e10
START_S, FIGURES_S = 1.5, 1.0


def base_estimate(cfg: Config) -> float:
    """Seconds to pretrain one sweep base on the fast engine, its optimum included."""
    n, d_in, d_out, pre = cfg.data.n, cfg.data.d_in, cfg.data.d_out, cfg.pretrain
    overhead, per_element, _ = STEP_COSTS["fast"]
    step = overhead + per_element * pre.batch_size * (d_in + d_out) + 6.0 * pre.batch_size * d_in * d_out / PRETRAIN_FLOPS
    return pre.epochs * (n // pre.batch_size) * step + _moments(cfg) + SETUP_PER_ELEMENT * n * (d_in + d_out)


def optima_estimate(cfg: Config) -> float:
    """Seconds for one group's float64 optima (its moments; each trial's projection is small)."""
    return _moments(cfg, ADAPTED) if cfg.finetune.optimum else 0.0


def _moments(cfg: Config, stage: str = BASE_STAGE) -> float:
    return 2.0 * cfg.rows(stage) * cfg.data.d_in * (cfg.data.d_in + cfg.data.d_out) / OPTIMUM_FLOPS


def size_text(n: float) -> str:
    return _size(n)
