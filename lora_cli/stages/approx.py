"""The 8x8 demo's one stage against a run folder, beside its Eckart–Young optimum."""

from __future__ import annotations

import time

from lora_cli.config.schemas import ApproxConfig
from lora_cli.core import floors
from lora_cli.methods.spec import low_rank_size
from lora_cli.recipes import approx
from lora_cli.runtime.resources import check_memory
from lora_cli.stages.common import check_divergence, finish, training_fields, use_threads
from lora_cli.stages.results import ApproxRecord, Parameters
from lora_cli.stages.recording import recording
from lora_cli.stages.kinds import APPROX
from lora_cli.store.run_folder import RunFolder


def approx_stage(
    run: RunFolder, cfg: ApproxConfig, on_log: approx.LogCallback | None = None, threads: int | None = None
) -> ApproxRecord:
    """Fit A·B to W and set the result beside the Eckart–Young optimum."""
    check_memory(cfg, "approx")
    n_threads = use_threads(cfg, "approx", threads)
    with recording(run, "approx"):
        start = time.perf_counter()
        problem = approx.make_problem(cfg)
        result = approx.fit(problem, cfg, on_log)
        check_divergence(result.divergence, "lr")
        run.save_tensors(APPROX, {"target": problem.target, "A": result.a, "B": result.b})
        optimum = floors.eckart_young(problem.target, cfg.rank)
        gap = result.final_loss - optimum
        fields = training_fields(run, "approx", result.history, start, unit="iteration")
        fields["final_loss"] = result.final_loss  # after the last step; the history ends before it
        record = ApproxRecord(
            **fields,
            threads=n_threads,
            optimal_loss=optimum,
            gap=gap,
            gap_relative=gap / optimum if optimum > 0 else None,
            singular_values=floors.singular_values(problem.target).tolist(),
            rank=cfg.rank,
            iterations=cfg.iterations,
            parameters=Parameters.count(cfg.d_in, cfg.d_out, cfg.rank, low_rank_size(cfg.rank, cfg.d_in, cfg.d_out)),
        )
        return finish(run, record)
