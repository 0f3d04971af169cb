"""The fast and batched engines' speed, this checkout against another git revision, alternating.

    python bench/bench_engines_ab.py REV                5 rounds (about 3 minutes)
    python bench/bench_engines_ab.py REV --rounds 9 --json out.json

A change that claims "no slower" is held to this. Each round runs one process per side,
in alternating order (a noisy VM drifts; alternation spreads the drift over both sides), both
on this venv's Python and libraries, the other side from a git worktree of REV. Each process
times, at the blog's finetune size (n = 10000, 1001 -> 1000, batch 128, plain LoRA, Adam at a
constant rate) and after a warm-up epoch, training epochs only:

    fast       the fast engine, rank 1 and rank 8 (s/epoch)
    batched    the batched engine, 16 lanes of ranks 1-8 (s/epoch for all of them)

It prints each side's median over the rounds and this checkout's time as a ratio of REV's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6  # timed: epochs 2..6 (epoch 1 warms up)

PROBE = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from lora_cli.config.loading import load_config
from lora_cli.recipes import pipeline, sweep
from lora_cli.recipes.data import thetas
from lora_cli.runtime import threads
from lora_cli.train.engines import Runtime
threads.use(threads.cores())
EPOCHS = int(sys.argv[2])

def configs(ranks, alphas):
    sets = [("finetune.epochs", EPOCHS), ("finetune.log_every", 1000), ("finetune.optimum", False), ("finetune.subspace", False)]
    return [load_config(None, [("bench", k, v) for k, v in [("adapter.rank", r), ("adapter.alpha", a), *sets]]) for r in ranks for a in alphas]

def per_epoch(run):
    stamps = []
    run(lambda epoch, loss: stamps.append(time.perf_counter()))
    return (stamps[EPOCHS] - stamps[1]) / (EPOCHS - 1)

base = thetas(configs((1,), (1.0,))[0])[0].T.contiguous()
out = {}
for rank in (1, 8):
    cfg = configs((rank,), (1.0,))[0]
    out[f"fast r{rank}"] = per_epoch(lambda cb: pipeline.finetune(cfg, base, Runtime("fast"), on_epoch=cb))
cfgs = configs((1, 2, 4, 8), (1.0, 2.0, 4.0, 8.0))
out["batched 16"] = per_epoch(lambda cb: sweep.finetune_group(cfgs, base, on_epoch=cb))
print(json.dumps(out))
"""


def probe(tree: Path) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", PROBE, str(tree), str(EPOCHS)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the probe failed in {tree}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the git revision to compare against, e.g. HEAD~1")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from lora_cli.runtime.machine import cpu_name

    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), args.rev], check=True)
        try:
            times: dict[str, list[dict[str, float]]] = {"this": [], args.rev: []}
            for i in range(args.rounds):
                order = [("this", ROOT), (args.rev, other)] if i % 2 == 0 else [(args.rev, other), ("this", ROOT)]
                for side, tree in order:
                    times[side].append(probe(tree))
                print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False)
    keys = list(times["this"][0])
    medians = {side: {k: statistics.median(r[k] for r in rounds) for k in keys} for side, rounds in times.items()}
    print(f"{cpu_name()}, {args.rounds} alternating rounds, s/epoch (median; min-max)")
    print(f"{'engine':<12} {'this':>22} {args.rev:>22} {'ratio':>7}")
    for k in keys:
        cells = [f"{medians[s][k]:.4f} ({min(r[k] for r in times[s]):.4f}-{max(r[k] for r in times[s]):.4f})" for s in ("this", args.rev)]
        print(f"{k:<12} {cells[0]:>22} {cells[1]:>22} {medians['this'][k] / medians[args.rev][k]:>6.3f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": cpu_name(), "rev": args.rev, "rounds": times, "medians": medians}, indent=1))


if __name__ == "__main__":
    main()
