"""What resume's checks cost (issue 22): `lora run --resume` and `lora sweep --resume` hash and
read everything they keep before keeping it. This prints that cost beside what the folder took
to train, for the blog run and for the 36-trial inits sweep.

    python bench/bench_verify.py                 trains both in a temporary folder first
    python bench/bench_verify.py --run R --sweep S    existing folders (a finished blog run, a finished sweep)

Checks are timed as resume runs them (stages/integrity.py), three times each, best kept; the
folders' own records give the training time.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def _lora(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "lora_cli", *args], check=True, stdout=subprocess.DEVNULL, cwd=ROOT)


def _best(check, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        check()
        times.append(time.perf_counter() - start)
    return min(times)


def run_cost(folder: Path) -> tuple[float, float]:
    """(seconds to check the finished run's three stages, seconds its stages recorded)."""
    from lora_cli.stages import integrity, kinds

    run = kinds.open_run(folder, lock=None)
    kept = []
    seconds = _best(lambda: kept.append(integrity.kept_stages(run, print)))
    assert kept[-1] == ("pretrain", "finetune", "merge"), kept[-1]
    trained = sum(run.stage(s)["seconds"] + (run.stage(s).get("optimum_seconds") or 0) for s in kept[-1])
    return seconds, trained


def sweep_cost(folder: Path) -> tuple[float, float, int]:
    """(seconds to check every trial and base of a finished sweep, seconds it recorded, trials)."""
    from lora_cli.config.sweep import load_sweep
    from lora_cli.stages import integrity, kinds

    sweep = load_sweep(folder / "config.yaml", stored=True)
    paths = [(folder / "trials" / t.id, t.config) for t in sweep.trials]
    bases = sorted((folder / "bases").iterdir())

    def check() -> None:
        for base in bases:
            assert integrity.base_problem(base) is None
        for path, cfg in paths:
            assert integrity.trial_problem(path, cfg) is None

    seconds = _best(check)
    trained = sum(kinds.open_run(p, lock=None).stage("finetune")["seconds"] for p, _ in paths)
    trained += sum(kinds.open_run(b, lock=None).stage("pretrain")["seconds"] for b in bases)
    return seconds, trained, len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished blog run folder (default: train one)")
    parser.add_argument("--sweep", type=Path, help="a finished sweep folder (default: sweep configs/sweeps/inits.yaml)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run, sweep = args.run, args.sweep
        if run is None:
            run = Path(tmp) / "posit"
            _lora("run", "configs/posit.yaml", "--run-dir", str(run))
        if sweep is None:
            sweep = Path(tmp) / "inits"
            _lora("sweep", "configs/sweeps/inits.yaml", "--run-dir", str(sweep), "--no-plot")
        checked, trained = run_cost(run)
        print(f"blog run ({run}): checks {checked:.3f} s; its stages took {trained:.1f} s to train, so checking costs {100 * checked / trained:.2f} %")
        checked, trained, trials = sweep_cost(sweep)
        print(f"{trials}-trial sweep ({sweep}): checks {checked:.3f} s ({1000 * checked / trials:.1f} ms a trial); "
              f"it took {trained:.1f} s to train, so checking costs {100 * checked / trained:.1f} %")


if __name__ == "__main__":
    main()
