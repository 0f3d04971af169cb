"""Experiment trackers: optional sinks of the metric stream, chosen with --log-to.

Each entry names the extra that installs it and the module that builds its sink; choosing a
tracker whose extra is missing is refused in one line, before any work, with the pip command
that fixes it. Importing this module imports no tracker.
"""

from __future__ import annotations

import importlib
import importlib.util
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


def sinks(names: tuple[str, ...], run: Any, stage: str, hparams: dict[str, Any]) -> list[Any]:
    """One sink per tracker in `names` for `stage` of the run folder `run`."""
    return [importlib.import_module(TRACKERS[name].module).Sink(run, stage, hparams) for name in names]
