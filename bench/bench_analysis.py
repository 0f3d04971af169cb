"""What the exact analysis (optima and subspace diagnostics) costs beside the training it explains.

    python bench/bench_analysis.py                 the blog recipe at 20 + 20 and 100 + 100 epochs (≈ 3 minutes)
    python bench/bench_analysis.py --sweep         also the 16-trial sweep against 16 finetune + merge stages (+4 min)
    python bench/bench_analysis.py --naive         also the naive port's peak memory (+2 min)
    python bench/bench_analysis.py --epochs 20 --json out.json

Every `lora` command runs as its own process under /usr/bin/time (peak RSS is its own). Ratios
compare runs of this one invocation: each stage's analysis seconds (optimum_seconds +
subspace_seconds, as its record holds them) against the same stage's training seconds, and the
whole `lora run` against the same run with pretrain.optimum, finetune.optimum and
finetune.subspace off. The GEMM rates are measured here, in this process, at the blog's shapes:
fp32 for a pretraining step's two products (128 x 1001 x 1000), fp64 for the moments.
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
sys.path[:0] = [str(ROOT / "bench")]
from lora_cli.runtime.machine import cpu_name  # noqa: E402
POSIT = ROOT / "configs" / "posit.yaml"
OFF = ["--set", "pretrain.optimum=false", "--set", "finetune.optimum=false", "--set", "finetune.subspace=false"]


def timed(args: list[str], cwd: Path) -> tuple[float, int, str]:
    """(wall seconds, peak RSS in MB, stdout) of one process under /usr/bin/time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "%M", *args], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return wall, int(done.stderr.strip().splitlines()[-1]) // 1024, done.stdout


def lora(*args: str, cwd: Path) -> tuple[float, int, dict]:
    wall, rss, out = timed([sys.executable, "-m", "lora_cli", *args], cwd)
    return wall, rss, json.loads(out) if out.strip().startswith("{") else {}


def gemm_rates() -> dict[str, float]:
    """fp32 and fp64 GEMM rates (GFLOP/s) at the blog's shapes, best of five."""
    import torch

    def rate(a, b) -> float:
        best = min(_seconds(lambda: a @ b) for _ in range(5))
        return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9

    x32, w32 = torch.randn(128, 1001), torch.randn(1001, 1000)
    x64 = torch.randn(10000, 1001, dtype=torch.float64)
    return {"fp32": rate(x32, w32), "fp64": rate(x64.T.contiguous(), x64)}


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def blog(epochs: int, work: Path) -> dict:
    """`lora run configs/posit.yaml --epochs E` with analysis on and off."""
    on_wall, on_rss, on = lora("run", str(POSIT), "--epochs", str(epochs), "--run-dir", f"on-{epochs}", "--json", cwd=work)
    off_wall, off_rss, _ = lora("run", str(POSIT), "--epochs", str(epochs), *OFF, "--run-dir", f"off-{epochs}", "--json", cwd=work)
    stages = {}
    for name, rec in on["stages"].items():
        analysis = (rec.get("optimum_seconds") or 0.0) + (rec.get("subspace_seconds") or 0.0)
        stages[name] = {"training_s": rec["seconds"], "optimum_s": rec.get("optimum_seconds"), "subspace_s": rec.get("subspace_seconds"),
                        "analysis_over_training": analysis / rec["seconds"]}
    return {"epochs": epochs, "wall_on_s": on_wall, "wall_off_s": off_wall, "wall_ratio": on_wall / off_wall,
            "rss_on_mb": on_rss, "rss_off_mb": off_rss, "stages": stages}


def pretrain_against_gemm(result: dict, fp32: float) -> dict:
    """Pretraining (training + its optimum) against two fp32 GEMMs of 128 x 1001 x 1000 a step."""
    epochs, steps = result["epochs"], 10000 // 128
    limit = epochs * steps * 2 * (2 * 128 * 1001 * 1000) / (fp32 * 1e9)
    pre = result["stages"]["pretrain"]
    spent = pre["training_s"] + (pre["optimum_s"] or 0.0)
    return {"gemm_limit_s": limit, "pretrain_s": spent, "ratio": spent / limit}


def sweep(epochs: int, work: Path) -> dict:
    """One `lora sweep --base` of 16 trials against the same 16 `lora finetune` + `lora merge`
    run one by one, counting those stages' own seconds (their records: training, optimum,
    diagnostics and the merge), start-up excluded; and the sweep's whole wall time."""
    sets = ["--set", f"finetune.epochs={epochs}", "--set", "finetune.log_every=10"]
    lora("pretrain", "--config", str(POSIT), "--run-dir", "base", cwd=work)
    stage_seconds = 0.0
    for rank in (1, 2, 4, 8):
        for alpha in (1, 2, 4, 8):
            folder = f"trial-{rank}-{alpha}"
            shutil.copytree(work / "base", work / folder)
            _, _, ft = lora("finetune", "--run-dir", folder, "--rank", str(rank), "--alpha", str(alpha), *sets, "--json", cwd=work)
            _, _, mg = lora("merge", "--run-dir", folder, "--json", cwd=work)
            stage_seconds += sum((rec.get(k) or 0.0) for rec in (ft, mg) for k in ("seconds", "optimum_seconds", "subspace_seconds"))
    grid = ["--grid", "adapter.rank=1,2,4,8", "--grid", "adapter.alpha=1,2,4,8"]
    wall, rss, _ = lora("sweep", str(POSIT), "--base", "base", *grid, *sets, "--run-dir", "sweep", cwd=work)
    return {"stages_s": stage_seconds, "sweep_wall_s": wall, "ratio": stage_seconds / wall, "sweep_rss_mb": rss}


def naive_rss(work: Path) -> int:
    code = f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'bench')!r}]; import naive_port; naive_port.run()"
    return timed([sys.executable, "-c", code], work)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, nargs="*", default=[20, 100], help="pretrain and finetune epochs of each blog run (none: skip)")
    parser.add_argument("--sweep", action="store_true", help="also the 16-trial sweep against 16 finetune + merge stages")
    parser.add_argument("--sweep-epochs", type=int, default=100, help="finetune epochs of the sweep's trials (the blog's 100)")
    parser.add_argument("--naive", action="store_true", help="also the naive port's peak RSS (100 + 100 epochs)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    rates = gemm_rates()
    result: dict = {"cpu": cpu_name(), "threads": os.cpu_count(), "gemm_gflops": rates, "blog": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for epochs in args.epochs:
            run = blog(epochs, work)
            run["pretrain_vs_gemm"] = pretrain_against_gemm(run, rates["fp32"])
            result["blog"].append(run)
            _print_blog(run)
        if args.naive:
            result["naive_rss_mb"] = naive_rss(work)
            print(f"naive port (100 + 100 epochs): peak RSS {result['naive_rss_mb']} MB")
        if args.sweep:
            result["sweep"] = sweep(args.sweep_epochs, work)
            s = result["sweep"]
            print(f"16-trial sweep at {args.sweep_epochs} epochs: 16 finetune + merge stages {s['stages_s']:.1f} s of their own, "
                  f"one lora sweep --base {s['sweep_wall_s']:.1f} s whole: {s['ratio']:.1f}x (peak RSS {s['sweep_rss_mb']} MB)")
    print(f"{result['cpu']}, {result['threads']} threads; GEMM fp32 {rates['fp32']:.0f} GFLOP/s, fp64 {rates['fp64']:.0f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


def _print_blog(run: dict) -> None:
    e = run["epochs"]
    print(f"blog recipe {e} + {e} epochs: lora run {run['wall_on_s']:.2f} s with analysis, {run['wall_off_s']:.2f} s without "
          f"({run['wall_ratio']:.3f}x); peak RSS {run['rss_on_mb']} MB with, {run['rss_off_mb']} MB without")
    for name, st in run["stages"].items():
        parts = ", ".join(f"{k[:-2]} {v:.3f} s" for k, v in st.items() if k.endswith("_s") and v is not None)
        print(f"  {name:8s} {parts}; analysis / training {100 * st['analysis_over_training']:.1f} %")
    g = run["pretrain_vs_gemm"]
    print(f"  pretrain with its optimum {g['pretrain_s']:.2f} s against the fp32 GEMM limit {g['gemm_limit_s']:.2f} s: {g['ratio']:.2f}x")


if __name__ == "__main__":
    main()
