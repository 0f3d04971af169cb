"""Sweep throughput over torchrun: one process against N, on one pretrained base.

    python bench/bench_distributed.py                 16 trials in 4 groups, 200 epochs, world sizes 1 and 2 (about a minute)
    python bench/bench_distributed.py --epochs 10     shorter
    python bench/bench_distributed.py --json out.json

The sweep is ranks 1, 2, 4, 8 × four adapter seeds (finetune.seed): four groups of four
batched trials, which torchrun's ranks share out. Every side is a real `lora sweep --base`
process (start-up, trial folders and results included, figures left out) on the same
pretrained folder. Threads are stated per row: torchrun sets OMP_NUM_THREADS=1 per rank
unless it is set, and this bench sets it explicitly. Scaling efficiency is the N-process
throughput over N times the 1-process throughput at the same threads per process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = ["--set", "data.n=4096", "--set", "data.d_in=512", "--set", "data.d_out=512", "--set", "pretrain.epochs=5"]
GRID = ["--grid", "adapter.rank=1,2,4,8", "--grid", "finetune.seed=0,1,2,3"]


def timed(command: list[str], cwd: Path, threads: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "LORA_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def sweep_command(world: int, run_dir: str, epochs: int) -> list[str]:
    lora = ["-m", "lora_cli", "sweep", str(ROOT / "configs" / "smoke.yaml"), *SIZE, *GRID, "--set", f"finetune.epochs={epochs}"]
    args = [*lora, "--base", "base", "--run-dir", run_dir, "--no-plot"]
    if world == 0:  # plain lora, no torchrun
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        timed([sys.executable, "-m", "lora_cli", "pretrain", "-c", str(ROOT / "configs" / "smoke.yaml"), *SIZE, "--run-dir", "base"], work, 2)
        for label, world, threads in (("lora sweep, 1 process", 0, 2), ("torchrun, 1 process", 1, 1), ("torchrun, 2 processes", 2, 1)):
            seconds = timed(sweep_command(world, f"sweep-{world}-{threads}", args.epochs), work, threads)
            rows.append({"setup": label, "processes": max(world, 1), "threads_per_process": threads, "seconds": seconds, "trials_per_s": 16 / seconds})
    one = next(r for r in rows if r["processes"] == 1 and r["threads_per_process"] == 1)
    for row in rows:
        row["efficiency"] = row["trials_per_s"] / (row["processes"] * one["trials_per_s"]) if row["threads_per_process"] == 1 else None
    _print(rows, args.epochs)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


def _print(rows: list[dict], epochs: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"16 trials (4 groups of 4), 512 → 512, n = 4096, {epochs} epochs, on {os.cpu_count()} cores", title_justify="left")
    for column in ("setup", "processes × threads", "seconds", "trials/s", "scaling efficiency"):
        table.add_column(column, justify="left" if column == "setup" else "right")
    for r in rows:
        efficiency = f"{100 * r['efficiency']:.0f} %" if r["efficiency"] is not None else "-"
        table.add_row(r["setup"], f"{r['processes']} × {r['threads_per_process']}", f"{r['seconds']:.1f}", f"{r['trials_per_s']:.2f}", efficiency)
    Console().print(table)


if __name__ == "__main__":
    main()
