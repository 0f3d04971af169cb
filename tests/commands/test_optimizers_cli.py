"""Optimisers, schedules and weight decay through the command line: the config keys reach the
engines (a run with them is not the default run, and equals the library's own training), the
decay record's numbers are recomputed here from the run's own files, and finetune.n sizes the
finetune data alone."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE

runner = CliRunner()


def _run(tmp_path, name, *sets, method="lora"):
    """The run folder, its manifest's stages and the terminal output."""
    run = tmp_path / name
    args = ["run", str(SMOKE), "--method", method, "--rank", "2", "--run-dir", str(run), "--set", "finetune.epochs=8"]
    done = runner.invoke(app, [*args, *(part for s in sets for part in ("--set", s))])
    assert done.exit_code == 0, done.output
    return run, json.loads((run / "manifest.json").read_text())["stages"], done


@pytest.mark.slow
def test_weight_decay_record_is_the_runs_own_objective(tmp_path):
    """loss + penalty of the trained factors on fresh rows, beside the soft-thresholded optimum, printed and stored."""
    sets = ("finetune.optimizer=sgd", "finetune.weight_decay=0.01", "finetune.lr=0.05", "finetune.schedule=cosine", "finetune.warmup_epochs=2")
    run, stages, done = _run(tmp_path, "decay", *sets)
    decay = stages["finetune"]["decay"]
    adapter = load_file(run / "adapter/adapter_model.safetensors")
    a, b = (adapter[f"base_model.model.linear.lora_{k}.weight"].double() for k in ("A", "B"))
    assert decay["trained"]["penalty"] == pytest.approx(0.01 / 2 * ((a**2).sum() + (b**2).sum()).item(), rel=1e-9)
    assert runner.invoke(app, ["data", str(run), "--out", str(tmp_path / "d.safetensors")]).exit_code == 0
    data = load_file(tmp_path / "d.safetensors")
    target = data["theta2"].double().T - load_file(run / "base.safetensors")["weight"].double()
    scaling = stages["finetune"]["scaling"]
    assert decay["trained"]["loss"] == pytest.approx((((target - scaling * b @ a) ** 2).sum() / target.shape[0]).item(), rel=1e-6)  # ΔW formed in float32
    s = torch.linalg.svdvals(target)[:2] - 0.01 / scaling * target.shape[0] / 2  # soft-thresholded by λ·d_out/2, λ = wd/s
    assert decay["optimum"]["penalty"] == pytest.approx(0.01 / scaling * s.clamp_min(0).sum().item(), rel=1e-7)
    assert decay["optimum"]["objective"] <= decay["trained"]["objective"]
    assert decay["coupled"] and decay["why"] is None
    assert f"= {decay['trained']['objective']:.6f}" in done.output and "The penalised optimum" in done.output


def test_adamw_and_anisotropic_inputs_say_where_the_closed_form_stops(tmp_path):
    _, stages, done = _run(tmp_path, "adamw", "finetune.optimizer=adamw", "finetune.weight_decay=0.01")
    assert not stages["finetune"]["decay"]["coupled"] and "AdamW minimises no fixed penalty" in done.output
    _, stages, done = _run(tmp_path, "aniso", "finetune.optimizer=sgd", "finetune.weight_decay=0.01", "shift.covariance.kind=spiked")
    assert stages["finetune"]["decay"]["optimum"] is None and "No closed form for the penalised optimum: the finetune inputs are not isotropic" in done.output


def test_the_optimiser_keys_change_training_and_the_default_does_not(tmp_path):
    _, plain, _ = _run(tmp_path, "plain")
    _, adam, _ = _run(tmp_path, "adam", "finetune.optimizer=adam", "finetune.schedule=constant", "finetune.weight_decay=0")
    _, sgd, _ = _run(tmp_path, "sgd", "finetune.optimizer=sgd", "finetune.lr=0.05")
    assert adam["finetune"]["final_loss"] == plain["finetune"]["final_loss"]
    assert sgd["finetune"]["final_loss"] != plain["finetune"]["final_loss"]
    assert plain["finetune"]["decay"] is None


def test_finetune_n_sizes_the_finetune_data_alone(tmp_path):
    run, stages, _ = _run(tmp_path, "small", "finetune.n=96", "finetune.batch_size=32")
    assert runner.invoke(app, ["data", str(run), "--out", str(tmp_path / "d.safetensors")]).exit_code == 0
    data = load_file(tmp_path / "d.safetensors")
    assert data["x2"].shape[0] == 96 and data["x"].shape[0] == 512
    rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["stage"] == "finetune"]
    assert rows[1]["step"] == rows[1]["epoch"] * (96 // 32)  # steps an epoch


def test_a_batch_larger_than_finetune_n_names_that_key(tmp_path):
    done = runner.invoke(app, ["validate", str(SMOKE), "--set", "finetune.n=20"])
    assert done.exit_code != 0 and "finetune.batch_size" in done.output and "finetune.n = 20" in done.output


def test_a_gradient_init_records_the_rows_its_gradient_read(tmp_path):
    _, stages, _ = _run(tmp_path, "one", "adapter.init=lora_one", "finetune.n=200", "finetune.batch_size=50")
    assert (stages["finetune"]["init_reads"], stages["finetune"]["init_rows"], stages["finetune"]["init"]) == ("gradient", 200, "lora_one")
    _, kpm, _ = _run(tmp_path, "kpm", "adapter.init=corda_kpm", "finetune.n=200", "finetune.batch_size=50")
    assert (kpm["finetune"]["init_reads"], kpm["finetune"]["init_rows"]) == ("source_inputs", 512)  # the pretraining rows
    _, plain, _ = _run(tmp_path, "plain")
    assert plain["finetune"]["init_reads"] is None and plain["finetune"]["init_rows"] is None
    done = runner.invoke(app, ["validate", str(SMOKE), "--set", "adapter.init=lora_ga", "--set", "adapter.rank=20"])
    assert done.exit_code != 0 and "the lora_ga init reads 2·rank singular vectors, so rank ≤ 16" in done.output


def test_zero_epochs_measures_the_start(tmp_path):
    """finetune.epochs = 0: no step; the record is the start's (LoRA-One's starts one gradient step from W)."""
    run, stages, _ = _run(tmp_path, "zero", "adapter.init=lora_one", "finetune.epochs=0")
    ft = stages["finetune"]
    rows = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["stage"] == "finetune"]
    assert ft["final_loss"] == ft["baseline_loss"] and [r["epoch"] for r in rows] == [0]
    assert ft["subspace"]["optimum_column_angle"] is not None  # ΔW₀ ≠ 0: its directions are measured
    _, plain, _ = _run(tmp_path, "zero-kaiming", "adapter.init=kaiming", "finetune.epochs=0")
    assert plain["finetune"]["subspace"]["optimum_column_angle"] is None  # ΔW₀ = 0: none
