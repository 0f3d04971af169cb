"""`lora data`: the regenerated data reproduces what the run's stages measured."""

import json

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE

runner = CliRunner()


def test_the_data_file_reproduces_the_run_s_own_numbers(runs_dir):
    run_dir = runs_dir / "r"
    assert runner.invoke(app, ["run", str(SMOKE), "--epochs", "3", "--run-dir", str(run_dir)]).exit_code == 0
    result = runner.invoke(app, ["data", str(run_dir), "--out", "d.safetensors", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shapes"]["x2"] == [512, 33]
    data, base = load_file("d.safetensors"), load_file(run_dir / "base.safetensors")["weight"]
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
    # the finetune's epoch-0 loss is the frozen base on (x2, y2); merge measured it again
    base_loss = torch.nn.functional.mse_loss(data["x2"] @ base.T, data["y2"]).item()
    assert abs(base_loss - stages["merge"]["baseline_loss"]) <= 1e-6 * base_loss
    assert torch.equal(data["true_delta"], load_file(run_dir / "shift.safetensors")["true_delta"])
    assert torch.equal(data["y"], data["x"] @ data["theta"])  # the smoke config has no noise
    again = runner.invoke(app, ["data", str(run_dir), "--out", "d.safetensors"])
    assert again.exit_code == 1 and "exists; pass --force" in again.stderr


def test_an_approx_run_has_no_pipeline_data(runs_dir):
    assert runner.invoke(app, ["approx", "--run-dir", str(runs_dir / "a")]).exit_code == 0
    result = runner.invoke(app, ["data", str(runs_dir / "a")])
    assert result.exit_code == 1 and "not a pipeline run" in result.stderr
