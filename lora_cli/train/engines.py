"""The engine registry, and the runtime (engine, device, threads) resolved once at the edge.

An engine is a class with `run_steps`, `evaluate`, `state`, `load` (train/loop.Engine) and
`trained` (the method's params as trained). Each entry declares the methods it trains, each
with its builder (a Task -> an engine); a method it does not declare it refuses in one line.
Pretraining is the `full` method from a fresh weight. Importing this module does not import
torch (`lora --help` lists the names), the builders do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from lora_cli.errors import ConfigError
from lora_cli.methods.full import Full
from lora_cli.methods.registry import METHODS
from lora_cli.train.optimizers import ADAM, Optim

DEVICES = ("auto", "cpu", "cuda")
AUTO = "auto"  # the first engine in ENGINES that trains the method (lane engines only in sweeps)


@dataclass(frozen=True)
class Task:
    """What an engine trains: the method's params from `start`, on the frozen weight, to fit y ≈ model(x)."""

    trains: tuple[str, ...]  # the keys of `start` the optimiser updates (methods/method.Method.trains)
    frozen: Any  # the base weight W (d_out, d_in) that stays as it is
    spec: Any  # the AdapterSpec (None when pretraining)
    start: dict[str, Any]  # the method's params at step 0
    x: Any  # (n, d_in)
    y: Any  # (n, d_out)
    lr: float
    batch_size: int
    held_out: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (x, y) evaluated, never trained on ("test")
    optim: Optim = ADAM  # the update rule and the learning rate's schedule (train/optimizers.py)


@dataclass(frozen=True)
class EngineEntry:
    help: str
    trains: dict[str, Callable[..., Any]] = field(default_factory=dict)  # method -> (Task, **parallel) -> engine
    missing: str = "it does not train {method}"  # why it cannot train a method it does not declare
    parallel: bool = False  # its builders take world= and train data-parallel under torchrun
    lanes: bool = False  # trains a sweep's trials together (recipes/sweep.py), never one run alone


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A constructor imported on first use, so that listing engines needs no torch."""

    def build(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return build


_FAST, _REFERENCE = "lora_cli.train.fast", "lora_cli.train.reference"
PRETRAIN = Full.name  # pretraining trains every weight of a fresh W
ENGINES: dict[str, EngineEntry] = {
    "fast": EngineEntry(
        "hand-written gradients, cached base output, one fused optimiser step",
        {"full": _lazy(_FAST, "FastPretrain"), **{name: _lazy(_FAST, "FastFinetune") for name in ("lora", "lora_fa", "lora_fb")}},
        "it has no hand-written {method} gradients",
        parallel=True,
    ),
    "reference": EngineEntry(
        "plain autograd and torch.optim, as the blog",
        {name: _lazy(_REFERENCE, "ReferencePretrain" if name == PRETRAIN else "ReferenceFinetune") for name in ("full", "lora", "dora", "lora_fa", "lora_fb", "vera")},
    ),
    "batched": EngineEntry(
        "a sweep's adapters on one base trained together, one fused step for all (lora sweep only)",
        {"lora": _lazy("lora_cli.train.batched", "BatchedFinetune"), "lora_fa": _lazy("lora_cli.train.batched", "BatchedFinetune")},
        "its stacked gradients have no {method} term",
        lanes=True,
    ),
}


def why_not(name: str, method: str) -> str | None:
    """Why engine `name` cannot train `method`, or None."""
    entry = ENGINES[name]
    if method in entry.trains:
        return None
    return entry.missing.format(method=METHODS[method].label or method)


def _able(method: str, lanes: bool = False) -> list[str]:
    return [name for name, e in ENGINES.items() if method in e.trains and e.lanes == lanes]


def engine_entry(name: str, method: str | None = None) -> EngineEntry:
    """The registry entry for `name`; ConfigError (never a fallback) when it is unknown, trains
    only a sweep's lanes, or cannot train `method` (None: pretraining)."""
    entry = ENGINES.get(name)
    if entry is None:
        raise ConfigError(f"--engine {name!r}: unknown engine; choose one of {AUTO}, {', '.join(ENGINES)}")
    if entry.lanes and method is not None:
        raise ConfigError(f"--engine {name}: trains a sweep's trials together; for one run use --engine {' or '.join(_able(method))}")
    reason = why_not(name, method or PRETRAIN)
    if reason:
        raise ConfigError(f"--engine {name}: cannot train this adapter: {reason}; use --engine {' or '.join(_able(method or PRETRAIN))}")
    return entry


def choose_engine(name: str, method: str | None = None) -> tuple[str, str | None]:
    """The engine to train `method` (None: the base) with: `name` itself (checked), or for
    "auto" the first one-run entry that declares it, with a line saying why when that is not the first."""
    if ENGINES.get(name, EngineEntry("")).lanes and method is None:
        name = AUTO  # pretraining a sweep's base: the batched engine trains adapters only
    if name != AUTO:
        engine_entry(name, method)
        return name, None
    first, chosen = next(iter(ENGINES)), _able(method or PRETRAIN)[0]
    if chosen == first:
        return first, None
    return chosen, f"Training on the {chosen} engine: the {first} engine cannot train this adapter ({why_not(first, method or PRETRAIN)})"


def build(name: str, method: str, task: Task, world: Any = None) -> Any:
    """Engine `name`'s trainer for `method` on `task` (data-parallel over `world` when it can).
    A stage passes the engine it resolved (Runtime.resolved); "auto" is resolved here only for
    a caller that trains without one (tests, the library)."""
    if method not in ENGINES.get(name, EngineEntry("")).trains:  # "auto", or a refusal to word
        name = choose_engine(name, None if task.spec is None else method)[0]
    return ENGINES[name].trains[method](task, **parallel_kwargs(name, world))


def parallel_kwargs(name: str, world: Any) -> dict[str, Any]:
    """What makes engine `name` train data-parallel over `world` (nothing in one process);
    ConfigError for an engine that trains in one process only."""
    if world is None or world.size == 1:
        return {}
    if not ENGINES[name].parallel:
        able = [other for other, e in ENGINES.items() if e.parallel]
        raise ConfigError(f"--engine {name}: trains in one process; under torchrun use --engine {' or '.join(able)} (DoRA needs one process)")
    return {"world": world}


def require_parallel(engine: str, method: str | None, world: Any) -> tuple[str, str | None]:
    """`choose_engine(engine, method)`, refusing up front, before any folder or work, an engine
    that cannot share the stage over torchrun's processes."""
    name, why = choose_engine(engine, method)
    if why is not None and world is not None and world.size > 1 and not ENGINES[name].parallel:
        first = next(iter(ENGINES))
        raise ConfigError(f"this adapter trains on the {name} engine (the {first} engine cannot: {why_not(first, method or PRETRAIN)}), "
                          "which runs in one process only; start this without torchrun (a sweep under torchrun trains such trials one to a process)")
    parallel_kwargs(name, world)
    return name, why


@dataclass(frozen=True)
class Runtime:
    """Where and how stages train, resolved once from the command line."""

    engine: str = AUTO  # or a name in ENGINES; each stage resolves it once (`resolved`)
    device: str = "cpu"  # a resolved torch device name: cpu or cuda
    threads: int | None = None  # CPU threads; None = choose by the size of a step
    world: Any = None  # distributed.World under torchrun (None: one process)
    log_to: tuple[str, ...] = ()  # trackers the stages' metric streams also feed (measure/trackers.py)

    def resolved(self, method: str | None) -> Runtime:
        """This runtime with its engine chosen for `method` (None: pretraining a base); see choose_engine."""
        return replace(self, engine=choose_engine(self.engine, method)[0])


def resolve_runtime(engine: str = AUTO, device: str = "auto", threads: int | None = None) -> Runtime:
    """Check the engine and resolve the device (auto -> cuda when a GPU is usable, else cpu)."""
    if engine not in ENGINES and engine != AUTO:
        engine_entry(engine)
    return Runtime(engine, resolve_device(device), threads)


def resolve_device(name: str) -> str:
    if name not in DEVICES:
        raise ConfigError(f"--device {name!r}: must be one of {', '.join(DEVICES)}")
    import torch

    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise ConfigError(f"--device cuda: no usable CUDA GPU here (torch {torch.__version__}); use --device cpu or auto")
    return "cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu"
