"""`lora data`: the regenerated data reproduces what the run's stages measured."""

import json

import pytest
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


def test_the_data_file_holds_the_inputs_population_covariances(runs_dir):
    run_dir = runs_dir / "c"
    sets = ["--set", "data.covariance.kind=spiked", "--set", "data.covariance.spikes=3", "--set", "data.covariance.align=top"]
    assert runner.invoke(app, ["run", str(SMOKE), "--epochs", "2", *sets, "--run-dir", str(run_dir)]).exit_code == 0
    assert runner.invoke(app, ["data", str(run_dir), "--out", "c.safetensors"]).exit_code == 0
    data = load_file("c.safetensors")
    source, target = data["sigma_source"], data["sigma_target"]
    assert source.dtype == torch.float64 and torch.equal(source, target)  # shift.covariance: same
    eigenvalues = torch.linalg.eigvalsh(source)
    assert torch.trace(source).item() == pytest.approx(33, rel=1e-12) and (eigenvalues > eigenvalues.min() * 5).sum().item() == 3
    u = torch.linalg.svd(data["theta"].double())[0][:, :3]  # the strong directions are θ's top three
    assert torch.allclose(u.T @ source @ u, torch.diag(eigenvalues.flip(0)[:3]), atol=1e-9)
    plain = runs_dir / "p"
    assert runner.invoke(app, ["run", str(SMOKE), "--epochs", "2", "--run-dir", str(plain)]).exit_code == 0
    assert runner.invoke(app, ["data", str(plain), "--out", "p.safetensors"]).exit_code == 0
    assert torch.equal(load_file("p.safetensors")["sigma_target"], torch.eye(33, dtype=torch.float64))
