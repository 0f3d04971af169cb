"""The held-out test loss and the live metric stream: test losses recomputed from `lora data`'s
rows, a test loss that approaches the population optimum, no trained byte changed by the test
rows, and metrics.jsonl readable while a run is still training."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.methods.spec import KEY_A, KEY_B
from lora_cli.recipes import pipeline
from lora_cli.recipes import sweep as plan
from tests.commands.procs import lora_process, wait_for
from tests.conftest import SMOKE, tiny_config

runner = CliRunner()
NOISY = ["--set", "data.noise_std=0.1", "--set", "shift.kind=random", "--set", "shift.value=0.3", "--rank", "2"]


def _mse(x, w, y) -> float:
    return ((x.double() @ w.double().T - y.double()) ** 2).mean().item()


def test_each_test_loss_is_the_mse_of_lora_data_s_test_rows_under_the_saved_weights(tmp_path):
    run_dir, out = tmp_path / "r", tmp_path / "d.safetensors"
    done = runner.invoke(app, ["run", str(SMOKE), *NOISY, "--epochs", "8", "--run-dir", str(run_dir), "--json"])
    assert done.exit_code == 0, done.output
    stages = json.loads(done.stdout)["stages"]
    assert runner.invoke(app, ["data", str(run_dir), "--out", str(out)]).exit_code == 0
    data = load_file(out)
    assert data["x_test"].shape == (1000, 33) and data["y2_test"].shape == (1000, 32)  # data.n_test's default
    base, merged = load_file(run_dir / "base.safetensors")["weight"], load_file(run_dir / "merged.safetensors")["weight"]
    assert stages["pretrain"]["final_test_loss"] == pytest.approx(_mse(data["x_test"], base, data["y_test"]), rel=1e-6)
    assert stages["finetune"]["final_test_loss"] == pytest.approx(_mse(data["x2_test"], merged, data["y2_test"]), rel=1e-6)
    assert stages["merge"]["test_loss"] == pytest.approx(_mse(data["x2_test"], merged, data["y2_test"]), rel=1e-6)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["test_loss"] for r in rows if r["stage"] == "finetune"][-1] == stages["finetune"]["final_test_loss"]
    assert "Test loss" in runner.invoke(app, ["finetune", "--run-dir", str(run_dir), "--force", "--epochs", "2"]).stdout


@pytest.mark.slow
def test_a_converged_run_s_test_loss_on_many_rows_is_within_5_percent_of_the_population_optimum():
    # 4096 training rows: least squares over all 33 x 32 weights fits some noise, σ²·d_in/(n − d_in) more
    # test loss on average (7 % at the smoke config's 512 rows, 0.8 % here)
    sets = {"data.noise_std": 0.1, "shift.kind": "lowrank", "shift.rank": 4, "shift.value": 0.05, "adapter.rank": 2, "data.n": 4096,
            "data.n_test": 20000, "finetune.epochs": 2000, "finetune.lr": 3e-3, "finetune.log_every": 500, "finetune.batch_size": 4096}
    for method in ("lora", "lora_fa", "full"):
        cfg = tiny_config(**sets, **{"adapter.method": method})
        base = pipeline.pretrain(cfg).weight
        result = pipeline.finetune(cfg, base)
        population = pipeline.finetune_optimum(cfg, base).population
        assert result.history.points[-1].metrics["test_loss"] == pytest.approx(population, rel=0.05), method


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_the_test_rows_change_no_trained_byte(method):
    def trained(n_test: int):
        cfg = tiny_config(**{"data.n_test": n_test, "adapter.method": method, "pretrain.epochs": 4, "finetune.epochs": 4})
        base = pipeline.pretrain(cfg).weight
        return base, pipeline.finetune(cfg, base).adapter

    (base0, off), (base1, on) = trained(0), trained(300)
    assert torch.equal(base0, base1) and off.keys() == on.keys() and all(torch.equal(off[k], on[k]) for k in off)


def test_the_batched_engine_s_lanes_are_the_same_with_or_without_test_rows():
    def lanes(n_test: int):
        cfgs = [tiny_config(**{"data.n_test": n_test, "adapter.rank": r, "finetune.epochs": 4, "pretrain.epochs": 4}) for r in (1, 2)]
        base = pipeline.pretrain(cfgs[0]).weight
        return plan.finetune_group(cfgs, base)

    for off, on in zip(lanes(0), lanes(200)):
        assert torch.equal(off.adapter[KEY_A], on.adapter[KEY_A]) and torch.equal(off.adapter[KEY_B], on.adapter[KEY_B])
        assert [p.loss for p in off.history.points] == [p.loss for p in on.history.points]
        assert "test_loss" in on.history.points[-1].metrics and not off.history.points[-1].metrics


@pytest.mark.process
def test_metrics_jsonl_holds_the_logged_epochs_while_the_run_still_trains(tmp_path):
    run_dir = tmp_path / "r"
    sets = ["--set", "data.n=4096", "--set", "data.d_in=256", "--set", "data.d_out=256", "--set", "pretrain.epochs=400",
            "--set", "pretrain.log_every=1", "--set", "pretrain.batch_size=8", "--set", "finetune.epochs=2"]
    proc = lora_process("run", str(SMOKE), *sets, "--run-dir", str(run_dir))
    metrics = run_dir / "metrics.jsonl"

    def logged() -> list[dict]:
        text = metrics.read_text() if metrics.exists() else ""
        return [json.loads(line) for line in text.splitlines()[:-1]]  # the last line may still be being written

    try:
        wait_for(lambda: len(logged()) >= 3, proc, "three epochs were logged")
        assert proc.poll() is None, "the run is still training"
        rows = logged()
        assert [r["epoch"] for r in rows] == list(range(len(rows))) and {r["stage"] for r in rows} == {"pretrain"}
        assert all(r["test_loss"] > 0 for r in rows)
    finally:
        proc.kill()
        proc.wait()
    kept = logged()
    assert len(kept) >= len(rows)  # what it logged before the kill stays


def test_each_batched_lane_streams_its_own_points_as_they_are_logged_and_a_diverged_lane_stops():
    sets = {"adapter.rank": 2, "finetune.epochs": 6, "finetune.log_every": 1, "pretrain.epochs": 4}
    cfgs = [tiny_config(**sets, **{"finetune.lr": lr}) for lr in (1e-2, 1e9)]
    base = pipeline.pretrain(cfgs[0]).weight
    heard: list[list] = [[], []]
    results = plan.finetune_group(cfgs, base, on_logs=[heard[0].append, heard[1].append])
    assert results[0].divergence is None and results[1].divergence is not None
    for lane, result in zip(heard, results):
        assert lane == result.history.points  # every point, in order, and nothing after a divergence
    assert [p.epoch for p in heard[0]] == list(range(7)) and len(heard[1]) < 7


def test_a_sweep_s_trials_append_their_metrics_rows_while_their_group_trains(tmp_path, monkeypatch):
    from lora_cli.stages import sweep as stages

    seen: dict[str, int] = {}
    real = stages.plan.finetune_group

    def watched(cfgs, base, device, on_epoch, data, on_logs=()):
        def peek(epoch, loss):
            if epoch == 3:  # mid-training: what each trial's metrics.jsonl holds now
                for path in sorted((tmp_path / "s" / "trials").glob("*/metrics.jsonl")):
                    rows = [json.loads(line) for line in path.read_text().splitlines()]
                    seen[path.parent.name] = max((r["epoch"] for r in rows if r["stage"] == "finetune"), default=-1)
            on_epoch(epoch, loss)

        return real(cfgs, base, device, peek, data, on_logs)

    monkeypatch.setattr(stages.plan, "finetune_group", watched)
    sets = ["--set", "pretrain.epochs=2", "--set", "finetune.epochs=6", "--set", "finetune.log_every=1"]
    done = runner.invoke(app, ["sweep", str(SMOKE), "--grid", "adapter.rank=1,2", *sets, "--run-dir", str(tmp_path / "s")])
    assert done.exit_code == 0, done.output
    assert seen == {"000-rank-1": 3, "001-rank-2": 3}  # epochs 0..3 of each trial, before its group ends


def test_a_completing_stage_keeps_the_rows_it_streamed_without_rewriting_the_log(tmp_path, monkeypatch):
    from lora_cli.store.metrics_log import MetricsLog

    rewrites = []
    real = MetricsLog._write_metrics
    monkeypatch.setattr(MetricsLog, "_write_metrics", lambda self, rows: (rewrites.append(len(rows)), real(self, rows)))
    done = runner.invoke(app, ["run", str(SMOKE), "--epochs", "3", "--run-dir", str(tmp_path / "r"), "--json"])
    assert done.exit_code == 0, done.output
    assert rewrites == []  # every row was appended once, as it was logged
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    history = {name: stage["history"] for name, stage in json.loads(done.stdout)["stages"].items() if "history" in stage}
    assert rows == history["pretrain"] + history["finetune"] and len(rows) >= 4
    again = runner.invoke(app, ["run", "--resume", "--run-dir", str(tmp_path / "r")])
    assert again.exit_code == 0 and rewrites == []  # resume verified the digests and kept them
