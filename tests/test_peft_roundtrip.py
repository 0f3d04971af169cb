"""Our adapter folder loads in Hugging Face PEFT and computes what our merged weight computes.
Skipped where peft is not installed (it is not a dependency); runs wherever it is."""

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE

peft = pytest.importorskip("peft")


class Holder(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("rank, alpha", [(1, 1.0), (3, 6.0)])
def test_peft_loads_the_adapter_and_matches_the_merged_weight(tmp_path, rank, alpha):
    run_dir = tmp_path / "run"
    args = ["run", str(SMOKE), "--epochs", "4", "--rank", str(rank), "--alpha", str(alpha), "--run-dir", str(run_dir)]
    assert CliRunner().invoke(app, args).exit_code == 0
    base = load_file(run_dir / "base.safetensors")["weight"]
    merged = load_file(run_dir / "merged.safetensors")["weight"]
    model = peft.PeftModel.from_pretrained(Holder(base), str(run_dir / "adapter"))
    x = torch.randn(7, base.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(model(x), x @ base.T), "the adapter changes the output"
        torch.testing.assert_close(model(x), x @ merged.T, rtol=1e-5, atol=1e-5)
