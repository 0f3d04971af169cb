"""Options shared by several commands, and turning flags into config overrides.

Numeric flags (--rank, --epochs, --lr, …) are read as text and go through the config's own
parser and checks, exactly like `--set key=value`: one rule and one wording for a bad value,
wherever it was typed. Plain on/off flags show no type in --help (metavar "").
"""

from __future__ import annotations

import functools
import inspect
import os
import typing
from collections.abc import Callable
from enum import Enum
from types import SimpleNamespace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lora_cli.config.overrides import Override, parse_scalar, parse_set_option
from lora_cli.errors import ConfigError
from lora_cli.measure.trackers import TRACKERS
from lora_cli.methods.inits import INITS
from lora_cli.methods.registry import METHODS
from lora_cli.train.engines import AUTO, DEVICES, ENGINES


def config_option(recipe: str) -> Any:
    return Annotated[
        Optional[Path],
        typer.Option("--config", "-c", metavar="FILE", help=f"YAML config; leave out for the built-in recipe ({recipe})."),
    ]


def set_option(example: str) -> Any:
    return Annotated[
        Optional[list[str]],
        typer.Option("--set", "-s", metavar="KEY=VALUE", help=f"Override one config key, e.g. --set {example}. Repeatable."),
    ]


def number_option(flag: str, help: str, metavar: str = "INT") -> Any:
    """A numeric flag, checked by the config's rules (see the module docstring)."""
    return Annotated[Optional[str], typer.Option(flag, metavar=metavar, help=help)]


def flag_option(flag: str, help: str) -> Any:
    return Annotated[bool, typer.Option(flag, metavar="", help=help)]


ConfigOpt = config_option("configs/posit.yaml")
SetOpt = set_option("adapter.rank=4")
RunDirOpt = Annotated[
    Optional[Path],
    typer.Option("--run-dir", "-r", metavar="DIR", help="Run folder; leave out for the newest pipeline run under runs/."),
]
NewRunDirOpt = Annotated[
    Optional[Path],
    typer.Option("--run-dir", "-r", metavar="DIR", help="Run folder to create; leave out for runs/<name>-<UTC time>."),
]
JsonOpt = flag_option("--json", "Print the result as one JSON object instead of tables.")
ForceOpt = flag_option("--force", "Run again over a stage that is complete or interrupted.")
ResumeOpt = flag_option("--resume", "Continue an interrupted stage from its last checkpoint, in --run-dir or the newest run.")
PlotOpt = flag_option("--plot", "Also write PNG figures into the run folder (see lora plot).")
ReportOpt = flag_option("--report", "Also write report.html into the folder when done: one self-contained page (see lora report).")
RankOpt = number_option("--rank", "LoRA rank r (adapter.rank).")
AlphaOpt = number_option("--alpha", "LoRA alpha (adapter.alpha): scaling = alpha / rank, or alpha / √rank with --rslora.", "NUMBER")
SeedOpt = number_option("--seed", "Seed for every random draw (seed).")
ThreadsOpt = number_option("--threads", "CPU threads (default: 1 for small steps, else every core; or $LORA_THREADS).")
# choices come from the registries, so --help lists them and a bad value exits 2 before any work
Engine = Enum("Engine", {name: name for name in (AUTO, *ENGINES)}, type=str)
Device = Enum("Device", {name: name for name in DEVICES}, type=str)
Init = Enum("Init", {name: name for name in INITS}, type=str)
InitOpt = Annotated[Optional[Init], typer.Option("--init", help="How lora_A and lora_B start (adapter.init; see lora schema).")]
LrRatioOpt = number_option("--lr-ratio", "LoRA+: lora_B learns at finetune.lr times this (adapter.lr_ratio).", "NUMBER")
RsloraOpt = flag_option("--rslora", "Scale by alpha / √rank, as rsLoRA (adapter.scaling=rslora).")
DoraOpt = flag_option("--dora", "DoRA: also train a magnitude per output row (the same as --method dora).")
Method = Enum("Method", {name: name for name in METHODS}, type=str)
_METHOD_HELP = "; ".join(f"{name}: {m.help}" for name, m in METHODS.items())
MethodOpt = Annotated[Optional[Method], typer.Option("--method", help=f"The way of fine-tuning (adapter.method; {_METHOD_HELP}).")]
_ENGINE_HELP = "; ".join(f"{name}: {entry.help}" for name, entry in ENGINES.items())
EngineOpt = Annotated[
    Engine, typer.Option("--engine", help=f"Training engine ({AUTO}: the first below that can train the adapter; {_ENGINE_HELP}).")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Where training runs: auto (CUDA when present), cpu or cuda.")]
_TRACKERS_HELP = "; ".join(f"{name}: {t.help}; needs pip install '{t.install}'" for name, t in TRACKERS.items())
LogToOpt = Annotated[
    Optional[str], typer.Option("--log-to", metavar="TRACKERS", help=f"Also send every logged metric to these trackers, comma-separated ({_TRACKERS_HELP}).")
]


# options several commands take, by parameter name: (annotation, default)
SHARED: dict[str, tuple[Any, Any]] = {
    "rank": (RankOpt, None),
    "alpha": (AlphaOpt, None),
    "init": (InitOpt, None),
    "rslora": (RsloraOpt, False),
    "lr_ratio": (LrRatioOpt, None),
    "dora": (DoraOpt, False),
    "method": (MethodOpt, None),
    "engine": (EngineOpt, Engine.auto),
    "device": (DeviceOpt, Device.auto),
    "threads": (ThreadsOpt, None),
    "log_to": (LogToOpt, None),
    "force": (ForceOpt, False),
    "resume": (ResumeOpt, False),
    "plot": (PlotOpt, False),
    "report": (ReportOpt, False),
    "as_json": (JsonOpt, False),
}


def shared(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the SHARED options `names` (listed in --help after its own, in this
    order); it receives their values as one namespace in its keyword-only `opts` parameter.

    Each option is declared once here instead of in every command's signature.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(command).parameters.values() if p.name != "opts"]
        added = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=SHARED[n][1], annotation=SHARED[n][0]) for n in names]

        @functools.wraps(command)
        def run(**values: Any) -> Any:
            opts = SimpleNamespace(**{n: values.pop(n) for n in names})
            return command(**values, opts=opts)

        run.__signature__ = inspect.Signature([*own, *added])
        run.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
        return run

    return decorate


def runs_root() -> Path:
    """Where run folders go: $LORA_RUNS_DIR when set and not empty (a leading ~ is the home
    folder, as a shell would read it), else ./runs."""
    return Path(os.environ.get("LORA_RUNS_DIR", "").strip() or "runs").expanduser()


def collect_overrides(sets: list[str] | None, flags: dict[str, tuple[tuple[str, ...], str | None]]) -> list[Override]:
    """(source, key, value) triples: every --set, then each flag that was given (flags win)."""
    overrides = []
    for text in sets or []:
        key, value = parse_set_option(text)
        overrides.append(("--set", key, value))
    for flag, (keys, text) in flags.items():
        if text is not None:
            value = parse_scalar(text, flag)
            overrides.extend((flag, key, value) for key in keys)
    return overrides


def adapter_flags(opts: Any) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """--rank, --alpha, --init, --rslora, --lr-ratio, --method and --dora as the config keys they set (see collect_overrides)."""
    if opts.dora and opts.method is not None and opts.method.value != "dora":
        raise ConfigError(f"--dora and --method {opts.method.value} ask for two methods; give one")
    return {
        "--rank": (("adapter.rank",), opts.rank),
        "--alpha": (("adapter.alpha",), opts.alpha),
        "--init": (("adapter.init",), opts.init.value if opts.init else None),
        "--rslora": (("adapter.scaling",), "rslora" if opts.rslora else None),
        "--lr-ratio": (("adapter.lr_ratio",), opts.lr_ratio),
        "--method": (("adapter.method",), opts.method.value if opts.method else None),
        "--dora": (("adapter.method",), "dora" if opts.dora else None),
    }


def thread_count(text: str | None) -> int | None:
    """--threads as a whole number ≥ 1, worded as the config words its own checks; None when absent."""
    from lora_cli.runtime import threads

    if text is None:
        return threads.requested(None)
    value = parse_scalar(text, "--threads")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"--threads = {value!r} is not allowed: must be a whole number ≥ 1")
    return threads.bounded(value, "--threads")
