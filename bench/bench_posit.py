"""Speed of the blog recipe: the naive port, lora's two engines and PEFT, side by side.

    python bench/bench_posit.py             per-epoch table at the blog's size (about 2 minutes)
    python bench/bench_posit.py --whole     also the whole pipeline: naive port vs `lora run` (+6 min)
    python bench/bench_posit.py --scaling   fast finetune s/epoch for d in 1000/2000/4000, r in 1/8/64
    python bench/bench_posit.py --json out.json

Every variant runs in its own process (so its peak RSS is its own) on the same data, init,
seed and batches. Ratios compare variants measured in this run. Per-epoch times cover
training epochs only (no full-data evaluation); --whole times everything, start-up included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def _config(args):
    from lora_cli.config.loading import load_config

    sets = {"data.n": args.n, "data.d_in": args.d_in, "data.d_out": args.d_out, "adapter.rank": args.rank}
    sets.update({f"{s}.epochs": args.epochs + 1 for s in ("pretrain", "finetune")})
    return load_config(None, [("bench", k, v) for k, v in sets.items()])


def _time_epochs(runner, epochs: int) -> tuple[float, float]:
    stamps: list[float] = []
    final = runner(lambda epoch, loss: stamps.append(time.perf_counter()))
    return (stamps[epochs] - stamps[0]) / epochs, final  # epochs 1..E; the eval is after E+1


def worker(job: str, args) -> dict:
    """Runs in a child process; returns what it measured."""
    import torch

    cfg = _config(args)
    if job == "gemm":
        return _gemm(cfg)
    if job.startswith("scaling"):
        return _scaling(args)
    if job == "whole:naive":
        import naive_port

        return naive_port.run(cfg.seed)
    stage, variant = job.split(":")
    import variants

    if stage == "pretrain":
        runners, setup = variants.pretrain_runners(cfg)
    else:  # an ideal pretrained base, W = θᵀ, so the finetune problem is the blog's
        from lora_cli.recipes.data import thetas

        base = thetas(cfg)[0].T.contiguous()
        runners, setup = variants.finetune_runners(cfg, base)
    if variant not in runners:
        return {"skipped": "peft is not installed (pip install peft)"}
    per_epoch, final = _time_epochs(runners[variant](), args.epochs)
    return {"per_epoch": per_epoch, "setup": setup, "final_loss": final, "threads": torch.get_num_threads()}


def _gemm(cfg) -> dict:
    """fp32 GEMM throughput for the pretrain step's two shapes, and the epoch limit it implies."""
    import torch

    b, d_in, d_out = cfg.pretrain.batch_size, cfg.data.d_in, cfg.data.d_out
    x, w, e = torch.randn(b, d_in), torch.randn(d_out, d_in), torch.randn(b, d_out)
    out, grad = torch.empty(b, d_out), torch.empty(d_out, d_in)
    step = lambda: (torch.mm(x, w.T, out=out), torch.mm(e.T, x, out=grad))  # noqa: E731
    for _ in range(20):
        step()
    reps = 200
    start = time.perf_counter()
    for _ in range(reps):
        step()
    seconds = (time.perf_counter() - start) / reps
    flops = 2 * (2 * b * d_in * d_out)
    steps = cfg.data.n // b
    return {"gflops": flops / seconds / 1e9, "limit_per_epoch": steps * seconds, "flops_per_step": flops}


def _scaling(args) -> dict:
    import torch
    import variants

    rows = {}
    for d in (1000, 2000, 4000):
        base = torch.randn(d, d) / d**0.5  # any frozen base: the cost does not depend on it
        for r in (1, 8, 64):
            cfg = _config(argparse.Namespace(**{**vars(args), "d_in": d, "d_out": d, "rank": r}))
            runners, _ = variants.finetune_runners(cfg, base)
            rows[f"{d}x{r}"] = _time_epochs(runners["fast"](), args.epochs)[0]
    return {"per_epoch": rows}


def spawn(argv: list[str]) -> tuple[dict, float, float]:
    """Run a child; returns (its JSON, wall seconds, its own peak RSS in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, cwd=ROOT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(argv)} failed (status {status})")
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--d-in", type=int, default=1001)
    parser.add_argument("--d-out", type=int, default=1000)
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per variant")
    parser.add_argument("--whole", action="store_true", help="also time the whole pipeline")
    parser.add_argument("--scaling", action="store_true", help="also the d x r scaling table")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    import report

    sizes = ["--n", str(args.n), "--d-in", str(args.d_in), "--d-out", str(args.d_out), "--rank", str(args.rank)]
    base_argv = [sys.executable, str(Path(__file__)), *sizes, "--epochs", str(args.epochs), "--worker"]
    results: dict = {"sizes": vars(args) | {"json": None}, "stages": {}}
    jobs = [("pretrain", v) for v in ("naive", "reference", "fast")]
    jobs += [("finetune", v) for v in ("naive", "reference", "fast", "peft")]
    for stage, variant in jobs:
        print(f"  timing {stage} / {variant} …", file=sys.stderr)
        measured, _, rss = spawn([*base_argv, f"{stage}:{variant}"])
        results["stages"].setdefault(stage, {})[variant] = measured | {"peak_rss_mb": rss}
    results["gemm"] = spawn([*base_argv, "gemm"])[0]
    if args.whole:
        print("  timing the whole pipeline: naive port, then lora run …", file=sys.stderr)
        naive, wall, rss = spawn([*base_argv, "whole:naive"])
        results["whole"] = {"naive": naive | {"seconds": wall, "peak_rss_mb": rss}}
        lora_argv = [sys.executable, "-m", "lora_cli", "run", "configs/posit.yaml", "--json", "--run-dir"]
        run_dir = ROOT / "runs" / f"bench-{os.getpid()}"
        ours, wall, rss = spawn([*lora_argv, str(run_dir)])
        results["whole"]["lora"] = {"seconds": wall, "peak_rss_mb": rss, "final_loss": ours["stages"]["merge"]["merged_loss"]}
    if args.scaling:
        print("  timing the scaling table …", file=sys.stderr)
        results["scaling"] = spawn([*base_argv, "scaling"])[0]["per_epoch"]
    report.show(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
