"""`lora approx`: the 8x8 rank-2 demo, with the optimum beside the result."""

from __future__ import annotations

from typing import Any

from lora_cli.commands.options import (
    NewRunDirOpt,
    SeedOpt,
    collect_overrides,
    config_option,
    number_option,
    set_option,
    shared,
    thread_count,
)
from lora_cli.commands.folders import create_run, resume_hint, show_record, write_plots
from lora_cli.commands.output import Output


ApproxConfigOpt = config_option("configs/approx.yaml")
ApproxSetOpt = set_option("lr=0.005")
ApproxRankOpt = number_option("--rank", "Rank r of A (d x r) and B (r x k).")
DInOpt = number_option("--d-in", "d: rows of the target W.")
DOutOpt = number_option("--d-out", "k: columns of the target W.")
IterationsOpt = number_option("--iterations", "Adam steps.")
LrOpt = number_option("--lr", "Adam learning rate.", "NUMBER")


@shared("threads", "force", "plot", "as_json")
def approx(
    config: ApproxConfigOpt = None, rank: ApproxRankOpt = None, d_in: DInOpt = None, d_out: DOutOpt = None,
    iterations: IterationsOpt = None, lr: LrOpt = None, seed: SeedOpt = None, sets: ApproxSetOpt = None,
    run_dir: NewRunDirOpt = None, *, opts: Any,
) -> None:
    """Fit A·B (rank r) to a random d x k matrix W, as in the 8x8 blog demo, beside the SVD optimum.

    With no options this is the blog exactly (configs/approx.yaml): seed 42, 8 x 8, rank 2,
    Adam lr 0.01, 1000 iterations. Try: lora approx --d-in 16 --d-out 12 --rank 3 --iterations 4000
    """
    flags = {
        "--rank": (("rank",), rank),
        "--d-in": (("d_in",), d_in),
        "--d-out": (("d_out",), d_out),
        "--iterations": (("iterations",), iterations),
        "--lr": (("lr",), lr),
        "--seed": (("seed",), seed),
    }
    from lora_cli.config.loading import ApproxConfig, load_config

    cfg = load_config(config, collect_overrides(sets, flags), schema=ApproxConfig)
    request = thread_count(opts.threads)
    out = Output(opts.as_json)
    run = create_run(cfg, run_dir, opts.force, out, ("approx",))
    from lora_cli.stages.approx import approx_stage

    with resume_hint(f"run it again with `lora approx -c {run.path / 'config.yaml'} --run-dir {run.path} --force`"):
        with out.progress("approx", cfg.iterations) as on_log:
            record = approx_stage(run, cfg, on_log, request)
    show_record(out, record, (cfg.d_in, cfg.d_out))
    result = record.to_json()
    if opts.plot:
        result["figures"] = write_plots(run, out)
    out.emit(result)
