"""Options shared by several commands, and turning flags into config overrides."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lora_cli.config import parse_set_option

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", "-c", help="YAML config; leave out for the blog recipe (configs/posit.yaml)."),
]
RunDirOpt = Annotated[
    Optional[Path],
    typer.Option("--run-dir", "-r", help="Run folder; leave out for the newest one under runs/."),
]
NewRunDirOpt = Annotated[
    Optional[Path],
    typer.Option("--run-dir", "-r", help="Run folder to create; leave out for runs/<name>-<UTC time>."),
]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override one config key, e.g. --set finetune.lr=5e-4. Repeatable."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object instead of tables.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Run again over a stage that is complete or interrupted.")]
ResumeOpt = Annotated[
    bool, typer.Option("--resume", help="Continue an interrupted stage from its last checkpoint, in --run-dir or the newest run.")
]
RankOpt = Annotated[Optional[int], typer.Option("--rank", help="LoRA rank r (finetune.rank).")]
AlphaOpt = Annotated[Optional[float], typer.Option("--alpha", help="LoRA alpha; scaling = alpha / rank (finetune.alpha).")]
PlotOpt = Annotated[bool, typer.Option("--plot", help="Also write PNG figures into the run folder (see lora plot).")]
EngineOpt = Annotated[
    str,
    typer.Option("--engine", help="fast (hand-written gradients, cached base output) or reference (plain autograd)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or cuda.")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed for every random draw (seed).")]


def runs_root() -> Path:
    """Where new run folders go: $LORA_RUNS_DIR, else ./runs."""
    return Path(os.environ.get("LORA_RUNS_DIR", "runs"))


def collect_overrides(sets: list[str] | None, flags: dict[str, tuple[tuple[str, ...], Any]]) -> list[tuple[str, str, Any]]:
    """(source, key, value) triples: every --set, then each flag that was given (flags win)."""
    overrides = []
    for text in sets or []:
        key, value = parse_set_option(text)
        overrides.append(("--set", key, value))
    for flag, (keys, value) in flags.items():
        if value is not None:
            overrides.extend((flag, key, value) for key in keys)
    return overrides
