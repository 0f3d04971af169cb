"""`lora export`: finished run and sweep folders sent to a tracker, as --log-to sends them live."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from lora_cli.commands.folders import open_run
from lora_cli.commands.options import JsonOpt
from lora_cli.commands.output import Output


def export(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(metavar="RUN_DIR", help="Run or sweep folders to send (each describes itself).", show_default=False)] = None,
    to: Annotated[Optional[str], typer.Option("--to", metavar="TRACKER", help="The tracker: tensorboard (writes <folder>/tensorboard/<stage>/) or mlflow (<runs root>/mlflow.db; MLFLOW_TRACKING_URI overrides).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send finished runs and sweeps to a tracker: every logged metric, the config and the final numbers.

    Examples:

      lora export runs/posit-20261123T101535Z --to tensorboard

      lora export runs/posit-sweep-20261123T101535Z --to mlflow
    """
    from lora_cli.errors import ConfigError
    from lora_cli.measure.trackers import parse
    from lora_cli.stages.export import export as send

    if not run_dirs or not to:
        raise ConfigError("lora export: name the run or sweep folders to send (lora runs lists them) and the tracker: --to tensorboard or --to mlflow")
    names = parse(to)
    if len(names) != 1:
        raise ConfigError("--to: name one tracker, e.g. --to tensorboard")
    out = Output(as_json)
    sent: dict[str, list[str]] = {}
    for run_dir in run_dirs:
        run = open_run(run_dir, out, kind=None, how="by naming it")
        sent[str(run.path)] = [str(p) for p in send(run, names)]
        out.show(f"{run.path}: {len(sent[str(run.path)])} tracker runs", *(f"  {p}" for p in sent[str(run.path)]))
    out.emit({"tracker": names[0], "exported": sent})
    if names[0] == "tensorboard":  # the one folder that holds them all
        out.note(f"View them with: tensorboard --logdir {os.path.commonpath([str(Path(p).resolve()) for p in sent])}")
    elif names[0] == "mlflow":
        uris = sorted({where.split(" run ")[0] for found in sent.values() for where in found})
        out.note("View them with: " + "; ".join(f"mlflow ui --backend-store-uri {uri}" for uri in uris))
