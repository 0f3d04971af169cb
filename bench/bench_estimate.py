"""How close `lora sweep --dry-run`'s time estimate (resources.group_estimate, which also
shares a sweep's groups over torchrun's processes) comes to the measured training time.

    python bench/bench_estimate.py            12 groups: 3 sizes x (fast alone, DoRA on the
                                              reference engine, batched 2 x rank 2, batched 16 x rank 4)
    python bench/bench_estimate.py --json out.json

Each group is trained as `lora sweep` trains it (recipes.sweep.finetune_group, or the pipeline
recipe for a trial alone), once to warm up and once timed; the table prints measured and
estimated seconds and their ratio. resources.STEP_COSTS was fitted to this script's output on
a 2-core Xeon; on another machine the ratios say how far to trust the estimate there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

SIZES = [(4096, 96, 32, 40), (8192, 512, 64, 6), (10000, 1001, 128, 4)]  # n, d_in = d_out, batch, epochs
GROUPS = [("fast", [2], False), ("reference", [2], True), ("batched", [2, 2], False), ("batched", [4] * 16, False)]


def _configs(n: int, d: int, batch: int, epochs: int, ranks: list[int], dora: bool):
    from lora_cli.config.loading import load_config

    sets = {"data.n": n, "data.d_in": d, "data.d_out": d, "pretrain.epochs": 1, "finetune.batch_size": batch,
            "finetune.epochs": epochs, "finetune.log_every": 1000, "adapter.method": "dora" if dora else "lora"}
    return [load_config(ROOT / "configs" / "smoke.yaml", [("bench", k, v) for k, v in {**sets, "adapter.rank": r}.items()]) for r in ranks]


def measure(engine: str, cfgs: list, base) -> float:
    from lora_cli.recipes import pipeline, sweep
    from lora_cli.train.engines import Runtime

    def once() -> float:
        start = time.perf_counter()
        if engine == "batched":
            sweep.finetune_group(cfgs, base)
        else:
            pipeline.finetune(cfgs[0], base, Runtime(engine))
        return time.perf_counter() - start

    once()
    return once()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from lora_cli.runtime import threads
    from lora_cli.recipes import pipeline
    from lora_cli.runtime.resources import group_estimate

    count = threads.use(threads.cores())
    rows = []
    for n, d, batch, epochs in SIZES:
        base = pipeline.pretrain(_configs(n, d, batch, 1, [1], False)[0]).weight
        for engine, ranks, dora in GROUPS:
            cfgs = _configs(n, d, batch, epochs, ranks, dora)
            measured, estimated = measure(engine, cfgs, base), group_estimate(cfgs, engine)[1]
            rows.append({"n": n, "d": d, "batch": batch, "epochs": epochs, "engine": engine, "trials": len(ranks),
                         "rank": ranks[0], "measured_s": measured, "estimated_s": estimated, "ratio": estimated / measured})
    _print(rows, count)
    if args.json:
        args.json.write_text(json.dumps({"threads": count, "groups": rows}, indent=2) + "\n")


def _print(rows: list[dict], count: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Estimated against measured training time, {count} threads", title_justify="left")
    for column in ("n", "d", "batch", "epochs", "engine", "trials×r", "meas. s", "est. s", "est/meas"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for r in rows:
        table.add_row(str(r["n"]), str(r["d"]), str(r["batch"]), str(r["epochs"]), r["engine"], f"{r['trials']}×{r['rank']}",
                      f"{r['measured_s']:.3f}", f"{r['estimated_s']:.3f}", f"{r['ratio']:.2f}")
    Console().print(table)
    worst = max(max(r["ratio"], 1 / r["ratio"]) for r in rows)
    Console().print(f"worst: {worst:.2f}x off (the estimate claims to be within 2x at these sizes)")


if __name__ == "__main__":
    main()
