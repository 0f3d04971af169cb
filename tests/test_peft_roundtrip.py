"""Our adapter folder loads in Hugging Face PEFT and computes what our merged weight computes.
Skipped where peft is not installed (it is not a dependency); runs wherever it is."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE, linear_holder

peft = pytest.importorskip("peft")


@pytest.mark.parametrize(
    "rank, alpha, flags",
    [
        (1, 1.0, []),
        (3, 6.0, ["--init", "kaiming"]),
        (2, 2.0, ["--init", "gaussian", "--rslora"]),
        (2, 1.0, ["--init", "orthogonal"]),
        (2, 4.0, ["--init", "pissa"]),
        (2, 4.0, ["--init", "pissa", "--rslora"]),
        (3, 1.0, ["--init", "olora"]),
        (2, 4.0, ["--init", "milora"]),
        (2, 4.0, ["--init", "lora_one"]),  # starts one gradient step off W: a plain LoRA onto W all the same
        (2, 4.0, ["--init", "lora_ga", "--rslora"]),
        (2, 4.0, ["--method", "lora_fb"]),  # frozen B: a PEFT LoRA too
        (8, 1.0, ["--method", "vera"]),  # PEFT's VeRA format, projections saved
        (2, 4.0, ["--dora"]),
        (2, 4.0, ["--dora", "--init", "pissa", "--lr-ratio", "4"]),
        (2, 4.0, ["--method", "lora_fa"]),  # LoRA-FA's adapter is a PEFT LoRA: only how it trained differs
        (2, 4.0, ["--method", "lora_fa", "--init", "kaiming", "--lr-ratio", "4"]),
    ],
)
def test_peft_loads_the_adapter_and_matches_the_merged_weight(tmp_path, rank, alpha, flags):
    """Every init, scaling rule, DoRA and LoRA-FA: PEFT's forward on the original base equals our merged
    weight (PiSSA and OLoRA through their rank-2r export), and the merged loss is the loss
    training reached on the frozen (residual) base."""
    run_dir = tmp_path / "run"
    args = ["run", str(SMOKE), "--epochs", "4", "--rank", str(rank), "--alpha", str(alpha), "--run-dir", str(run_dir), *flags]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    assert stages["merge"]["final_loss"] == pytest.approx(stages["finetune"]["final_loss"], rel=1e-4)
    base = load_file(run_dir / "base.safetensors")["weight"]
    merged = load_file(run_dir / "merged.safetensors")["weight"]
    model = peft.PeftModel.from_pretrained(linear_holder(base), str(run_dir / "adapter"))
    if "--dora" in flags:  # the trained magnitude is what PEFT holds, not its own fresh one
        stored = load_file(run_dir / "adapter" / "adapter_model.safetensors")["base_model.model.linear.lora_magnitude_vector"]
        loaded = model.base_model.model.linear.lora_magnitude_vector["default"].weight.detach()
        assert torch.equal(loaded, stored) and not torch.allclose(stored, torch.linalg.norm(base, dim=1), rtol=1e-6, atol=0)
    x = torch.randn(7, base.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(model(x), x @ base.T), "the adapter changes the output"
        torch.testing.assert_close(model(x), x @ merged.T, rtol=1e-5, atol=1e-5)
