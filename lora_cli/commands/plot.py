"""`lora plot`: PNG figures for any run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lora_cli.commands.options import JsonOpt, runs_root
from lora_cli.commands.output import Output


def plot(
    run_dir: Annotated[Optional[Path], typer.Argument(metavar="RUN_DIR", help="Run folder; leave out for the newest one.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="Folder for the PNGs (default: the run folder).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw the run's figures as PNG: loss curves, heatmaps, singular values, parameters.

    Example: lora plot runs/posit-20261123T101535Z --out figures/
    """
    from lora_cli.store.run_index import open_newest
    from lora_cli.store.run_folder import RunFolder

    out = Output(as_json)
    # writing into the run folder makes plot a writer; reading it for elsewhere, a reader
    lock = "exclusive" if out_dir is None else "shared"
    if run_dir is None:
        run = open_newest(runs_root(), None, lock=lock)
        out.note(f"Using the newest run folder: {run.path} (choose another by naming it)")
    else:
        run = RunFolder.open(run_dir, lock=lock)
    paths = write_plots(run, out, out_dir)
    out.emit({"run_dir": str(run.path), "figures": paths})


def write_plots(run, out: Output, out_dir: Path | None = None) -> list[str]:
    """Write the figures and list them for the person; returns their paths as text."""
    from lora_cli.figures import plot_run

    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        from lora_cli.errors import RunError

        raise RunError(f"{out_dir}: exists and is not a folder; choose another --out")
    paths = [str(p) for p in plot_run(run, out_dir)]
    out.show("Figures:", *(f"  {p}" for p in paths))
    return paths
