"""Forgetting: a finetune's source_loss (fresh rows of the pretraining task, logged every log
epoch and measured again on the merged weight) is the population loss of the weight on the
source distribution, tr((W' − θᵀ)·Σ_s·(W' − θᵀ)ᵀ)/d_out + σ², recomputed here in float64 from
the run's own tensors and lora data's Σ_s, for LoRA and full fine-tuning."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE

pytestmark = pytest.mark.slow
runner = CliRunner()
SETS = ["data.n_test=40000", "data.noise_std=0.1", "data.covariance.kind=power_law", "data.covariance.align=top",
        "shift.covariance.kind=spiked", "shift.covariance.spikes=4", "finetune.epochs=6", "finetune.log_every=2"]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_source_loss_is_the_weights_population_loss_on_the_source_task(tmp_path, method):
    run = tmp_path / "r"
    args = ["run", str(SMOKE), "--method", method, "--rank", "2", "--run-dir", str(run), "--json"]
    done = runner.invoke(app, [*args, *(part for s in SETS for part in ("--set", s))])
    assert done.exit_code == 0, done.output
    stages = json.loads(done.stdout)["stages"]
    assert runner.invoke(app, ["data", str(run), "--out", str(tmp_path / "d.safetensors")]).exit_code == 0
    data = load_file(tmp_path / "d.safetensors")
    sigma, theta = data["sigma_source"], data["theta"].double()
    assert not torch.equal(sigma, data["sigma_target"])  # the two tasks' inputs differ here
    merged = load_file(run / "merged.safetensors")["weight"].double()
    error = merged - theta.T
    expected = (torch.trace(error @ sigma @ error.T) / theta.shape[1]).item() + 0.1**2
    assert stages["merge"]["source_loss"] == pytest.approx(expected, rel=0.03)
    assert stages["finetune"]["final_source_loss"] == pytest.approx(stages["merge"]["source_loss"], rel=1e-4)
    rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["stage"] == "finetune"]
    assert [r["epoch"] for r in rows] == [0, 2, 4, 6] and all(r["source_loss"] is not None for r in rows)
    base = load_file(run / "base.safetensors")["weight"].double() - theta.T  # epoch 0: the base alone
    assert rows[0]["source_loss"] == pytest.approx((torch.trace(base @ sigma @ base.T) / theta.shape[1]).item() + 0.01, rel=0.03)
    assert rows[-1]["source_loss"] > 10 * rows[0]["source_loss"]  # the finetune forgot the source task


def test_a_run_is_placed_on_its_exact_frontier(tmp_path):
    run = tmp_path / "r"
    sets = [*SETS, "finetune.frontier=true", "shift.kind=lowrank", "shift.rank=4", "shift.value=0.3"]
    done = runner.invoke(app, ["run", str(SMOKE), "--rank", "2", "--run-dir", str(run), "--plot", "--json",
                               *(part for s in sets for part in ("--set", s))])
    assert done.exit_code == 0, done.output
    frontier = json.loads(done.stdout)["stages"]["finetune"]["frontier"]
    assert str(run / "frontier.png") in json.loads(done.stdout)["figures"]
    assert runner.invoke(app, ["data", str(run), "--out", str(tmp_path / "d.safetensors")]).exit_code == 0
    data = load_file(tmp_path / "d.safetensors")
    base = load_file(run / "base.safetensors")["weight"].double()
    delta = load_file(run / "merged.safetensors")["weight"].double() - base
    d = data["theta2"].double().T - base
    error = d - delta
    target = (torch.trace(error @ data["sigma_target"] @ error.T) / d.shape[0]).item() + 0.01
    forgetting = (torch.trace(delta @ data["sigma_source"] @ delta.T) / d.shape[0]).item()
    assert frontier["trained"] == pytest.approx([target, forgetting], rel=1e-6)
    best = frontier["rank"][0][0]  # λ = 0: the best target loss any rank-2 update reaches
    assert best <= target and frontier["full"][0][0] == pytest.approx(0.01, rel=1e-9)
    assert len(frontier["rank"]) == len(frontier["full"]) == len(frontier["lambdas"]) == 26


def test_a_sweep_draws_every_trial_on_its_frontier(tmp_path):
    from lora_cli.show.figures import figures_of
    from lora_cli.stages.kinds import open_run

    sweep = tmp_path / "s"
    sets = [*SETS, "finetune.frontier=true", "data.n_test=500"]
    done = runner.invoke(app, ["sweep", str(SMOKE), "--grid", "adapter.rank=1,2", "--grid", "adapter.method=lora,full", "--run-dir", str(sweep),
                               *(part for s in sets for part in ("--set", s))])
    assert done.exit_code == 0, done.output
    assert (sweep / "sweep_frontier.png").is_file()
    ax = figures_of(open_run(sweep, lock=None))["sweep_frontier.png"].axes[0]
    points = {tuple(line.get_xydata()[0]) for line in ax.get_lines() if line.get_marker() == "o"}
    trained = set()
    for trial in (sweep / "trials").iterdir():
        lt, f = json.loads((trial / "manifest.json").read_text())["stages"]["finetune"]["frontier"]["trained"]
        trained.add((f, lt))
    assert points == trained and len(trained) >= 3  # full fine-tuning ignores the rank: its two trials may coincide
