"""Experiment trackers: optional sinks of the metric stream, chosen with --log-to.

Each entry names the extra that installs it and the module that builds its sink; choosing a
tracker whose extra is missing is refused in one line, before any work, with the pip command
that fixes it. Importing this module imports no tracker.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lora_cli.errors import ConfigError


@dataclass(frozen=True)
class Tracker:
    help: str
    needs: str  # the importable package its extra installs
    install: str  # the pip requirement, as pyproject.toml's extra of the same name has it
    module: str  # where its sink is: a class (run, stage, hparams) -> sink with close(final)


TRACKERS: dict[str, Tracker] = {
    "tensorboard": Tracker("TensorBoard event files in <run folder>/tensorboard/<stage>/ (tensorboard --logdir runs)",
                           "tensorboard", "tensorboard>=2.14", "lora_cli.measure.tensorboard"),
    "mlflow": Tracker("an MLflow run per stage in <runs root>/mlflow.db, a sweep's trials nested (MLFLOW_TRACKING_URI overrides)",
                      "mlflow", "mlflow>=2.10", "lora_cli.measure.mlflow"),
}


def parse(text: str | None) -> tuple[str, ...]:
    """--log-to "tensorboard,…" as tracker names, each known and installed; () for none."""
    names = tuple(name.strip() for name in (text or "").split(",") if name.strip())
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"--log-to {name!r}: unknown tracker; choose from {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name].needs) is None:
            need = TRACKERS[name]
            raise ConfigError(f"--log-to {name}: {need.needs} is not installed; install it with: pip install '{need.install}' "
                              f"(or pip install -e '.[{name}]' in lora's checkout)")
    return names


def flat_params(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A resolved config as flat parameters ("adapter.rank": 4); lists as text, no None."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flat_params(value, f"{prefix}{key}.")
        elif value is not None:
            out[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def folder_of(name: str, stage: str) -> str:
    """Where tracker `name` keeps `stage`'s run inside a run folder."""
    return f"{name}/{stage}"


def sinks(names: tuple[str, ...], run: Any, stage: str, hparams: dict[str, Any], guard: bool = True) -> list[Any]:
    """One sink per tracker in `names` for `stage` of the run folder `run`; each `guard`ed so
    that a tracker failing never stops the run nor loses its folder."""
    made = []
    for name in names:
        build = lambda name=name: importlib.import_module(TRACKERS[name].module).Sink(run, stage, hparams)  # noqa: E731
        made.append(Guarded(name, run, build) if guard else build())
    return made


def finish(names: tuple[str, ...], run: Any, params: dict[str, Any], final: dict[str, float], guard: bool = True) -> list[str]:
    """Folder `run` is done (a sweep: every trial): trackers that keep a run for the folder
    itself (MLflow's parent run) record `params` and `final` and end it; where each is."""
    done = []
    for name in names:
        module = importlib.import_module(TRACKERS[name].module)
        if hasattr(module, "finish"):
            call = lambda module=module: module.finish(run, params, final)  # noqa: E731
            where = _guarded(name, run, call) if guard else call()
            if where:
                done.append(where)
    return done


def attach(names: tuple[str, ...], run: Any, rel: str) -> None:
    """Add the file `rel`, written into `run` after its tracker runs ended (report.html), to
    the trackers that keep files (MLflow's artifacts)."""
    for name in names:
        module = importlib.import_module(TRACKERS[name].module)
        if hasattr(module, "attach"):
            _guarded(name, run, lambda module=module: module.attach(run, rel))


def final_metrics(final: dict[str, Any]) -> dict[str, float]:
    """A completed stage's final numbers as the trackers log them: `final/<name>`, numbers only."""
    return {f"final/{k}": float(v) for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def first_line(exc: BaseException) -> str:
    """A tracker library's exception in one line: its type and the first line of its message."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}"


def warn(message: str) -> None:
    print(f"lora: {message}", file=sys.stderr, flush=True)


def _guarded(name: str, run: Any, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 -- a tracker's failure is reported, never the run's
        warn(f"--log-to {name} failed ({first_line(exc)}); the run goes on without it and {run.path} keeps "
             f"every result: send it later with: lora export {run.path} --to {name}")
        return None


class Guarded:
    """A tracker's sink that, on its first failure, says so in one line and stops hearing."""

    def __init__(self, name: str, run: Any, build: Callable[[], Any]):
        self.name, self.run = name, run
        self.sink = _guarded(name, run, build)
        self.where = getattr(self.sink, "where", None)

    def __call__(self, *point: Any) -> None:
        self._call(lambda: self.sink(*point))

    def close(self, final: dict[str, float]) -> None:
        self._call(lambda: self.sink.close(final))

    def _call(self, call: Callable[[], None]) -> None:
        if self.sink is not None and _guarded(self.name, self.run, lambda: call() or True) is None:
            self.sink = None
