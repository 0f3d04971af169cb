"""How `lora run` copes with a busy CPU: wall time with every core kept busy, against idle.

    .venv/bin/python bench/bench_contention.py                # smoke and a 20-epoch blog run, ~3 minutes
    .venv/bin/python bench/bench_contention.py --only smoke   # seconds
    .venv/bin/python bench/bench_contention.py --compare      # also torch's old defaults, for the gap

Each workload runs as a real `lora run` subprocess, first on an idle machine, then while one
CPU-bound process per core spins (`while True: pass`). The ratio loaded / idle is the figure
of merit: the target is ≤ 2.5x. `--compare` repeats both with the settings lora used before it
chose threads itself (torch's default thread count, OpenMP's spinning wait policy), so the
table shows what the choice buys. Idle speed of the blog recipe is bench_posit.py's job.
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
WORKLOADS = {
    "smoke": ["run", str(ROOT / "configs" / "smoke.yaml")],
    "blog, 20 epochs": ["run", str(ROOT / "configs" / "posit.yaml"), "--epochs", "20"],
}
TARGET = 2.5
# torch's defaults before lora chose: every core, and OpenMP threads that spin while they wait
OLD_DEFAULTS = {"LORA_THREADS": str(os.cpu_count()), "OMP_WAIT_POLICY": "ACTIVE"}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_lora(args: list[str], env_extra: dict[str, str]) -> float:
    """Wall seconds of one `lora …` subprocess in a throwaway runs folder."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "LORA_RUNS_DIR": tmp, "PYTHONPATH": str(ROOT), **env_extra}
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lora_cli", *args], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"lora {' '.join(args)} failed: {done.stderr.strip()}")
    return seconds


class Busy:
    """One spinning process per core while the block runs."""

    def __init__(self, count: int):
        self.count, self.procs = count, []

    def __enter__(self) -> Busy:
        spin = "while True: pass"
        self.procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(self.count)]
        time.sleep(0.5)  # let them reach the scheduler
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def measure(name: str, settings: str, env_extra: dict[str, str], busy: int) -> dict:
    args = WORKLOADS[name]
    idle = run_lora(args, env_extra)
    with Busy(busy):
        loaded = run_lora(args, env_extra)
    return {"workload": name, "settings": settings, "idle_s": idle, "loaded_s": loaded, "ratio": loaded / idle}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["smoke", "blog"], help="one workload")
    parser.add_argument("--compare", action="store_true", help="also run with torch's old defaults")
    parser.add_argument("--busy", type=int, default=cores(), help="spinning processes (default: one per core)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    opts = parser.parse_args()
    names = [n for n in WORKLOADS if opts.only is None or n.startswith(opts.only)]
    settings = [("lora's choice", {})] + ([("old defaults", OLD_DEFAULTS)] if opts.compare else [])
    rows = []
    print(f"{cores()} cores, {opts.busy} busy processes while loaded; target loaded/idle ≤ {TARGET}x")
    print(f"{'workload':<17} {'settings':<14} {'idle s':>8} {'loaded s':>9} {'ratio':>7}  target")
    for name in names:
        for label, env_extra in settings:
            row = measure(name, label, env_extra, opts.busy)
            rows.append(row)
            verdict = ("yes" if row["ratio"] <= TARGET else "no") if label == "lora's choice" else "-"
            print(f"{name:<17} {label:<14} {row['idle_s']:8.2f} {row['loaded_s']:9.2f} {row['ratio']:6.2f}x  {verdict}", flush=True)
    if opts.json:
        opts.json.write_text(json.dumps({"cores": cores(), "busy": opts.busy, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
