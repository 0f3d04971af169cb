"""The engine registry, and the runtime (engine, device, threads) resolved once at the edge.

An engine is a class with `run_steps`, `evaluate`, `state` and `load` (train/loop.Engine);
this registry says how to build one for each stage and what adapters it supports, and refuses
anything else with one line. Importing this module does not import torch (`lora --help`
lists the names), the builders do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lora_cli.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
AUTO = "auto"  # the first engine in ENGINES that can train the adapter


@dataclass(frozen=True)
class EngineEntry:
    help: str
    pretrain: Callable[..., Any]  # (w0, x, y, lr, batch_size) -> an Engine with .weight()
    finetune: Callable[..., Any]  # (base_w, spec, lora_A, lora_B, x, y, lr, batch_size) -> one with .adapter()
    supports: Callable[[Any], str | None] = lambda spec: None  # why it cannot train `spec`, or None
    parallel: bool = False  # its builders take world= and train data-parallel under torchrun


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A constructor imported on first use, so that listing engines needs no torch."""

    def build(*args: Any, **kwargs: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return build


ENGINES: dict[str, EngineEntry] = {
    "fast": EngineEntry(
        "hand-written gradients, cached base output, one fused Adam",
        _lazy("lora_cli.train.fast", "FastPretrain"),
        _lazy("lora_cli.train.fast", "FastFinetune"),
        lambda spec: "it has no hand-written DoRA gradients" if spec.dora else None,
        parallel=True,
    ),
    "reference": EngineEntry(
        "plain autograd and torch.optim.Adam, as the blog",
        _lazy("lora_cli.train.reference", "ReferencePretrain"),
        _lazy("lora_cli.train.reference", "ReferenceFinetune"),
    ),
}


def engine_entry(name: str, spec: Any = None) -> EngineEntry:
    """The registry entry for `name`; ConfigError (never a fallback) when it is unknown or
    cannot train the adapter `spec`."""
    entry = ENGINES.get(name)
    if entry is None:
        raise ConfigError(f"--engine {name!r}: unknown engine; choose one of {AUTO}, {', '.join(ENGINES)}")
    reason = entry.supports(spec) if spec is not None else None
    if reason:
        able = [other for other, e in ENGINES.items() if not e.supports(spec)]
        raise ConfigError(f"--engine {name}: cannot train this adapter: {reason}; use --engine {' or '.join(able)}")
    return entry


def choose_engine(name: str, spec: Any = None) -> tuple[str, str | None]:
    """The engine to train `spec` (None: the base) with: `name` itself (checked), or for
    "auto" the first entry that supports it, with a line saying why when that is not the first."""
    if name != AUTO:
        engine_entry(name, spec)
        return name, None
    first = next(iter(ENGINES))
    if spec is None or not ENGINES[first].supports(spec):
        return first, None
    chosen = next(other for other, e in ENGINES.items() if not e.supports(spec))
    return chosen, f"Training on the {chosen} engine: the {first} engine cannot train this adapter ({ENGINES[first].supports(spec)})"


def parallel_kwargs(name: str, world: Any) -> dict[str, Any]:
    """What makes engine `name` train data-parallel over `world` (nothing in one process);
    ConfigError for an engine that trains in one process only."""
    if world is None or world.size == 1:
        return {}
    if not ENGINES[name].parallel:
        able = [other for other, e in ENGINES.items() if e.parallel]
        raise ConfigError(f"--engine {name}: trains in one process; under torchrun use --engine {' or '.join(able)} (DoRA needs one process)")
    return {"world": world}


def require_parallel(engine: str, spec: Any, world: Any) -> tuple[str, str | None]:
    """`choose_engine(engine, spec)`, refusing up front, before any folder or work, an engine
    that cannot share the stage over torchrun's processes."""
    name, why = choose_engine(engine, spec)
    if why is not None and world is not None and world.size > 1 and not ENGINES[name].parallel:
        first = next(iter(ENGINES))
        raise ConfigError(f"this adapter trains on the {name} engine (the {first} engine cannot: {ENGINES[first].supports(spec)}), "
                          "which runs in one process only; start this without torchrun (a sweep under torchrun trains such trials one to a process)")
    parallel_kwargs(name, world)
    return name, why


@dataclass(frozen=True)
class Runtime:
    """Where and how stages train, resolved once from the command line."""

    engine: str = AUTO  # or a name in ENGINES; a stage resolves it with choose_engine
    device: str = "cpu"  # a resolved torch device name: cpu or cuda
    threads: int | None = None  # CPU threads; None = choose by the size of a step
    world: Any = None  # distributed.World under torchrun (None: one process)


def resolve_runtime(engine: str = AUTO, device: str = "auto", threads: int | None = None) -> Runtime:
    """Check the engine and resolve the device (auto -> cuda when a GPU is usable, else cpu)."""
    if engine != AUTO:
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
