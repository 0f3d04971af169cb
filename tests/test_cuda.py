"""The CUDA paths, for a machine with a GPU: `pytest -m cuda` (skipped without one).

Each test trains on the GPU and holds the result to the same training on the CPU, the
independent reference: same data and init (drawn on the CPU, then moved), same batches, so
the trajectories differ only by the order of float32 sums. LORA_TEST_DEVICE=cpu runs them
with the CPU on both sides, which checks the tests themselves, not CUDA.
"""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.recipes import pipeline, sweep
from lora_cli.train.engines import Runtime
from tests.conftest import SMOKE, linear_holder, tiny_config

DEVICE = os.environ.get("LORA_TEST_DEVICE") or "cuda"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="no CUDA GPU")]
# loose enough for another summation order over 12 epochs, tight enough to catch a wrong step
TRAJECTORY = {"rtol": 1e-4, "atol": 0.0}


def _losses(history):
    return torch.tensor([p.loss for p in history.points], dtype=torch.float64)


@pytest.fixture(scope="module")
def base():
    return pipeline.pretrain(tiny_config(), runtime=Runtime("fast")).weight


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_pretraining_on_the_gpu_follows_the_cpu(engine):
    cfg = tiny_config(**{"pretrain.epochs": 12, "pretrain.log_every": 2})
    cpu = pipeline.pretrain(cfg, runtime=Runtime(engine))
    gpu = pipeline.pretrain(cfg, runtime=Runtime(engine, DEVICE))
    assert gpu.weight.device.type == "cpu"  # results come back to the CPU for the run folder
    assert_close(_losses(gpu.history), _losses(cpu.history), **TRAJECTORY)
    assert_close(gpu.weight, cpu.weight, rtol=0, atol=1e-4)


@pytest.mark.parametrize("init, dora", [("normal", False), ("pissa", False), ("olora", False), ("normal", True)])
def test_finetuning_on_the_gpu_follows_the_cpu(base, init, dora):
    cfg = tiny_config(**{"adapter.rank": 2, "adapter.init": init, "adapter.dora": dora, "finetune.epochs": 12, "finetune.log_every": 2})
    engine = "reference" if dora else "fast"
    cpu = pipeline.finetune(cfg, base, runtime=Runtime(engine))
    gpu = pipeline.finetune(cfg, base, runtime=Runtime(engine, DEVICE))
    assert_close(_losses(gpu.history), _losses(cpu.history), **TRAJECTORY)
    s = cfg.adapter.spec().scaling
    assert_close(s * gpu.lora_B @ gpu.lora_A, s * cpu.lora_B @ cpu.lora_A, rtol=0, atol=1e-4)


@pytest.mark.parametrize("optimizer, schedule, engine", [("adamw", "cosine", "fast"), ("sgd", "warmup", "fast"), ("sgd", "cosine", "reference")])
def test_every_optimiser_on_the_gpu_follows_the_cpu(base, optimizer, schedule, engine):
    """The fused AdamW and SGD kernels on CUDA (and torch.optim's own), under a schedule, against the CPU run."""
    sets = {"adapter.rank": 2, "finetune.epochs": 12, "finetune.log_every": 2, "finetune.optimizer": optimizer, "finetune.schedule": schedule,
            "finetune.warmup_epochs": 2, "finetune.weight_decay": 0.01, "finetune.lr": 0.01}
    cfg = tiny_config(**sets)
    cpu = pipeline.finetune(cfg, base, runtime=Runtime(engine))
    gpu = pipeline.finetune(cfg, base, runtime=Runtime(engine, DEVICE))
    assert_close(_losses(gpu.history), _losses(cpu.history), **TRAJECTORY)


def test_the_batched_engine_on_the_gpu_follows_each_trial_alone_on_the_cpu(base):
    cfgs = [tiny_config(**{"adapter.rank": r, "adapter.scaling": rule, "finetune.epochs": 12, "finetune.log_every": 2})
            for r, rule in [(1, "standard"), (2, "rslora"), (4, "standard")]]
    together = sweep.finetune_group(cfgs, base, DEVICE)
    for cfg, lane in zip(cfgs, together):
        alone = pipeline.finetune(cfg, base, runtime=Runtime("fast"))
        assert_close(_losses(lane.history), _losses(alone.history), **TRAJECTORY)
        assert_close(lane.lora_B @ lane.lora_A, alone.lora_B @ alone.lora_A, rtol=0, atol=1e-4)


def test_lora_run_on_the_gpu_writes_an_adapter_peft_loads(tmp_path):
    peft = pytest.importorskip("peft")
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(SMOKE), "--device", DEVICE, "--rank", "2", "--run-dir", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert stages["finetune"]["device"] == DEVICE
    base, merged = (load_file(run_dir / name)["weight"] for name in ("base.safetensors", "merged.safetensors"))
    model = peft.PeftModel.from_pretrained(linear_holder(base), str(run_dir / "adapter"))
    x = torch.randn(7, base.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert_close(model(x), x @ merged.T, rtol=1e-5, atol=1e-5)
