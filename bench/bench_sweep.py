"""Speed of `lora sweep`'s batched engine against today's one-adapter fast engine, in one process.

    python bench/bench_sweep.py                16 trials (ranks 1, 2, 4, 8 x alphas 1, 2, 4, 8), 100 epochs,
                                               batched vs one after another; then s/epoch per trial for K = 1, 4, 16, 64
    python bench/bench_sweep.py --epochs 20    shorter (the ratio's data generation share grows)
    python bench/bench_sweep.py --json out.json
    python bench/bench_sweep.py --commands     also the whole commands: 16 `lora finetune` processes, one after
                                               another, against one `lora sweep --base` (≈ 2 more minutes)

Both sides train the blog's finetune problem (n = 10000, d = 1001 x 1000, batch 128) on the
same base (W = θᵀ, where pretraining ends) with the same data, inits and batches. "Engine time"
is the recipe call: data, init, training and every full-data evaluation, as `lora finetune`
and `lora sweep` run them; the base, the optimum and the files are left out on both sides. `--commands` times what a
user waits for instead: each side as real processes on one pretrained base folder, every
optimum, diagnostic and file included (the sweep with --no-plot: the finetunes draw nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from lora_cli.runtime.machine import cpu_name  # noqa: E402


def _configs(ranks, alphas, epochs: int, log_every: int = 10):
    from lora_cli.config.loading import load_config

    sets = [("finetune.epochs", epochs), ("finetune.log_every", log_every)]
    return [load_config(None, [("bench", k, v) for k, v in [("adapter.rank", r), ("adapter.alpha", a), *sets]]) for r in ranks for a in alphas]


def sixteen(epochs: int, base) -> dict:
    from lora_cli.recipes import pipeline, sweep
    from lora_cli.train.engines import Runtime

    cfgs = _configs((1, 2, 4, 8), (1.0, 2.0, 4.0, 8.0), epochs)
    start = time.perf_counter()
    alone = [pipeline.finetune(cfg, base, Runtime("fast")) for cfg in cfgs]
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    together = sweep.finetune_group(cfgs, base)
    batched = time.perf_counter() - start
    # against the starting loss: near 0 a final loss keeps float32 rounding of the start's size
    worst = max(abs(a.history.final - b.history.final) / a.history.baseline for a, b in zip(alone, together))
    return {"trials": len(cfgs), "epochs": epochs, "sequential_s": sequential, "batched_s": batched,
            "ratio": sequential / batched, "max_final_loss_rel_diff": worst}


def per_trial_epoch(k: int, base, epochs: int = 6) -> float:
    """Seconds per epoch per trial with K lanes of rank 4 (alphas 1..K), training epochs only."""
    from lora_cli.recipes import sweep

    cfgs = _configs((4,), [float(a) for a in range(1, k + 1)], epochs, log_every=1000)
    stamps: list[float] = []
    sweep.finetune_group(cfgs, base, on_epoch=lambda epoch, loss: stamps.append(time.perf_counter()))
    return (stamps[epochs - 1] - stamps[1]) / (epochs - 2) / k


def fast_epoch(base, epochs: int = 6) -> float:
    from lora_cli.recipes import pipeline
    from lora_cli.train.engines import Runtime

    cfg = _configs((4,), (1.0,), epochs, log_every=1000)[0]
    stamps: list[float] = []
    pipeline.finetune(cfg, base, Runtime("fast"), on_epoch=lambda epoch, loss: stamps.append(time.perf_counter()))
    return (stamps[epochs - 1] - stamps[1]) / (epochs - 2)


def lora(*args: str, cwd: Path) -> float:
    """Wall seconds of one `lora …` process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lora_cli", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"lora {' '.join(args)} failed: {done.stderr.strip()}")
    return time.perf_counter() - start


def commands(epochs: int) -> dict:
    """16 `lora finetune` processes (each on its own copy of one pretrained folder) against
    one `lora sweep --base` of the same 16 trials."""
    sets = ["--set", f"finetune.epochs={epochs}", "--set", "finetune.log_every=10"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lora("pretrain", "--config", str(ROOT / "configs" / "posit.yaml"), "--run-dir", "base", cwd=work)
        sequential = 0.0
        for rank in (1, 2, 4, 8):
            for alpha in (1, 2, 4, 8):
                folder = f"trial-{rank}-{alpha}"
                shutil.copytree(work / "base", work / folder)
                sequential += lora("finetune", "--run-dir", folder, "--rank", str(rank), "--alpha", str(alpha), *sets, cwd=work)
        grid = ["--grid", "adapter.rank=1,2,4,8", "--grid", "adapter.alpha=1,2,4,8"]
        swept = lora("sweep", str(ROOT / "configs" / "posit.yaml"), "--base", "base", *grid, *sets, "--run-dir", "sweep", "--no-plot", cwd=work)
    return {"processes_s": sequential, "sweep_s": swept, "ratio": sequential / swept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--commands", action="store_true", help="also time the whole commands (16 processes against one sweep)")
    args = parser.parse_args()
    import torch

    from lora_cli.runtime import threads
    from lora_cli.recipes.data import thetas

    count = threads.use(threads.cores())
    base = thetas(_configs((1,), (1.0,), 1)[0])[0].T.contiguous()
    result = {"threads": count, "cpu": cpu_name(), "torch": torch.__version__, "sixteen": sixteen(args.epochs, base)}
    result["fast_rank4_s_per_epoch"] = fast_epoch(base)
    result["per_trial"] = {k: per_trial_epoch(k, base) for k in (1, 4, 16, 64)}
    if args.commands:
        result["commands"] = commands(args.epochs)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result["sixteen"]
    console = Console()
    console.print(f"{result['cpu']}, {result['threads']} threads, torch {result['torch']}")
    console.print(
        f"16 trials x {s['epochs']} epochs at the blog's size: one after another {s['sequential_s']:.2f} s, "
        f"batched {s['batched_s']:.2f} s: {s['ratio']:.1f}x (target ≥ 8x); final losses agree to {s['max_final_loss_rel_diff']:.1e} of the starting loss"
    )
    table = Table(title="Training s/epoch per trial, rank 4, K lanes (fast engine alone: "
                  f"{result['fast_rank4_s_per_epoch']:.4f} s/epoch)", title_justify="left")
    for column in ("K", "s/epoch per trial", "fast alone ÷ this"):
        table.add_column(column, justify="right")
    for k, t in result["per_trial"].items():
        table.add_row(str(k), f"{t:.4f}", f"{result['fast_rank4_s_per_epoch'] / t:.1f}x")
    console.print(table)
    if "commands" in result:
        c = result["commands"]
        console.print(
            f"Whole commands: 16 `lora finetune` processes one after another {c['processes_s']:.1f} s, "
            f"one `lora sweep --base` {c['sweep_s']:.1f} s: {c['ratio']:.1f}x"
        )


if __name__ == "__main__":
    main()
