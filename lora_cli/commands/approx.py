"""`lora approx`: the 8x8 rank-2 demo, with the optimum beside the result."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from lora_cli.commands.options import (
    ConfigOpt,
    ForceOpt,
    JsonOpt,
    NewRunDirOpt,
    PlotOpt,
    SeedOpt,
    SetOpt,
    collect_overrides,
)
from lora_cli.commands.output import Output
from lora_cli.commands.pipeline import create_run
from lora_cli.commands.plot import write_plots
from lora_cli.config import ApproxConfig, load_config


def approx(
    config: ConfigOpt = None,
    rank: Annotated[Optional[int], typer.Option("--rank", help="Rank r of A (d x r) and B (r x k).")] = None,
    d_in: Annotated[Optional[int], typer.Option("--d-in", help="d: rows of the target W.")] = None,
    d_out: Annotated[Optional[int], typer.Option("--d-out", help="k: columns of the target W.")] = None,
    iterations: Annotated[Optional[int], typer.Option("--iterations", help="Adam steps.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Adam learning rate.")] = None,
    seed: SeedOpt = None,
    sets: SetOpt = None,
    run_dir: NewRunDirOpt = None,
    force: ForceOpt = False,
    plot: PlotOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Fit A·B (rank r) to a random d x k matrix W, as in the 8x8 blog demo, beside the SVD optimum.

    With no options this is the blog exactly (configs/approx.yaml): seed 42, 8 x 8, rank 2,
    Adam lr 0.01, 1000 iterations.
    """
    flags = {
        "--rank": (("rank",), rank),
        "--d-in": (("d_in",), d_in),
        "--d-out": (("d_out",), d_out),
        "--iterations": (("iterations",), iterations),
        "--lr": (("lr",), lr),
        "--seed": (("seed",), seed),
    }
    cfg = load_config(config, collect_overrides(sets, flags), schema=ApproxConfig)
    out = Output(as_json)
    run = create_run(cfg, run_dir, force, out)
    from lora_cli import stages

    with out.progress("approx", cfg.iterations) as on_log:
        report = stages.approx_stage(run, cfg, on_log)
    _show(out, report, cfg)
    if plot:
        report["figures"] = write_plots(run, out)
    out.emit(report)


def _show(out: Output, report: dict[str, Any], cfg: ApproxConfig) -> None:
    from lora_cli import report as tables

    out.show(
        tables.approx_config_table(cfg.d_in, cfg.d_out, cfg.rank),
        tables.parameter_table(report["parameters"], cfg.d_in, cfg.d_out),
        f"[bold]approx[/]: A·B vs W, MSE  ({report['seconds']:.2f} s)",
        tables.loss_table(report["history"], unit="Iteration"),
        tables.optimum_table(report),
        tables.optimum_verdict(report),
        tables.singular_values_table(report["singular_values"], cfg.rank),
    )
