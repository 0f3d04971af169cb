"""`lora plot` and `lora data`: figures and data from a run folder, beside it or elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lora_cli.commands.folders import open_run, write_plots
from lora_cli.commands.options import JsonOpt, flag_option
from lora_cli.commands.output import Output


ReplaceOpt = flag_option("--force", "Replace FILE when it exists.")


def plot(
    run_dir: Annotated[Optional[Path], typer.Argument(metavar="RUN_DIR", help="Run folder; leave out for the newest one.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", metavar="DIR", help="Folder for the PNGs (default: the run folder).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw the run's figures as PNG: loss curves, heatmaps, singular values, parameters.

    Example: lora plot runs/posit-20261123T101535Z --out figures/
    """
    out = Output(as_json)
    # writing into the run folder makes plot a writer; reading it for elsewhere, a reader
    lock = "exclusive" if out_dir is None else "shared"
    run = open_run(run_dir, out, kind=None, lock=lock, how="by naming it")
    paths = write_plots(run, out, out_dir)
    out.emit({"run_dir": str(run.path), "figures": paths})


def data(
    run_dir: Annotated[Optional[Path], typer.Argument(metavar="RUN_DIR", help="Pipeline run folder; leave out for the newest one.")] = None,
    out_file: Annotated[Path, typer.Option("--out", metavar="FILE", help="The safetensors file to write.")] = Path("data.safetensors"),
    force: ReplaceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a run's data, regenerated from its seeds, as one safetensors file.

    Keys: x, y (pretraining), x2, y2 (finetuning), their held-out test rows x_test, y_test, x2_test,
    y2_test (when data.n_test > 0), theta, theta2, true_delta = (θ2 − θ)ᵀ, and the inputs'
    population covariances sigma_source and sigma_target (float64).
    Example: lora data runs/posit-20261123T101535Z --out posit-data.safetensors
    """
    from lora_cli.stages.data import write_data

    out = Output(as_json)
    run = open_run(run_dir, out, lock="shared", how="by naming it")
    shapes = write_data(run, out_file, force)
    out.show(*(f"{key}: {tuple(shape)}" for key, shape in shapes.items()))
    out.emit({"run_dir": str(run.path), "file": str(out_file), "shapes": shapes})
    out.note(f"Wrote {out_file}; load it with safetensors.torch.load_file")
