"""The benchmark's variants train the same problem: at a tiny size they end at the same loss.
(Speed is what the benchmark measures; nothing here asserts a time.)"""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_every_variant_trains_the_same_problem(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--n", "256", "--d-in", "16", "--d-out", "12", "--epochs", "2", "--json", str(out)]
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_posit.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())
    for stage, variants in results["stages"].items():
        losses = {name: m["final_loss"] for name, m in variants.items() if "final_loss" in m}
        assert {"naive", "reference", "fast"} <= set(losses), stage
        for name, loss in losses.items():
            assert loss == pytest.approx(losses["naive"], rel=1e-4), (stage, name)
        assert all(m["per_epoch"] > 0 and m["peak_rss_mb"] > 0 for m in variants.values() if "per_epoch" in m)
    gemm = results["gemm"]
    assert gemm["flops_per_step"] == 2 * 2 * 128 * 16 * 12  # forward + weight-gradient GEMMs, batch 128
    assert gemm["limit_per_epoch"] > 0
    assert "Targets" in done.stdout and "finetune ≥ 40x" in done.stdout
