"""Trackers read back with their own readers: TensorBoard's event-file reader finds every
logged metric, the run's settings and its final numbers, equal to metrics.jsonl and the
manifest; a sweep gives one TensorBoard run per trial; a missing extra is one line."""

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE

pytest.importorskip("tensorboard", reason="tensorboard is not installed: .venv/bin/pip install -e '.[tensorboard]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

runner = CliRunner()


def _events(path):
    accumulator = EventAccumulator(str(path))
    accumulator.Reload()
    return accumulator


def _rows(run_dir, stage):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["stage"] == stage]


def test_every_metric_the_settings_and_the_final_numbers_reach_tensorboard(tmp_path):
    run_dir = tmp_path / "r"
    done = runner.invoke(app, ["run", str(SMOKE), "--rank", "2", "--run-dir", str(run_dir), "--log-to", "tensorboard", "--json"])
    assert done.exit_code == 0, done.output
    stages = json.loads(done.stdout)["stages"]
    for stage in ("pretrain", "finetune"):
        events, rows = _events(run_dir / "tensorboard" / stage), _rows(run_dir, stage)
        for metric in ("loss", "test_loss"):
            assert [(s.step, s.value) for s in events.Scalars(metric)] == [(r["epoch"], pytest.approx(r[metric], rel=1e-6)) for r in rows]
        for key in ("final_loss", "final_test_loss", "optimal_loss", "gap"):
            assert events.Scalars(f"final/{key}")[-1].value == pytest.approx(stages[stage][key], rel=1e-6, abs=1e-12)
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
        assert start.hparams["adapter.rank"].number_value == 2 and start.hparams["name"].string_value == "smoke"
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert "final/optimal_loss" in {m.name.tag for m in experiment.metric_infos}
    assert sorted(p.name for p in (run_dir / "tensorboard").iterdir()) == ["finetune", "pretrain"]  # no stray sub-run


def test_a_rerun_stage_starts_its_tensorboard_run_afresh(tmp_path):
    run_dir = tmp_path / "r"
    args = ["--run-dir", str(run_dir), "--log-to", "tensorboard"]
    assert runner.invoke(app, ["run", str(SMOKE), *args]).exit_code == 0
    assert runner.invoke(app, ["finetune", "--force", "--epochs", "3", *args]).exit_code == 0
    events = _events(run_dir / "tensorboard" / "finetune")
    assert [s.step for s in events.Scalars("loss")] == [r["epoch"] for r in _rows(run_dir, "finetune")] == [0, 3]


def test_a_sweep_gives_each_trial_its_own_tensorboard_run(tmp_path):
    sweep = tmp_path / "s"
    sets = ["--set", "pretrain.epochs=2", "--set", "finetune.epochs=4", "--set", "finetune.log_every=2"]
    done = runner.invoke(app, ["sweep", str(SMOKE), "--grid", "adapter.rank=1,2", *sets, "--run-dir", str(sweep), "--log-to", "tensorboard"])
    assert done.exit_code == 0, done.output
    trials = sorted((sweep / "trials").iterdir())
    assert len(trials) == 2
    for trial in trials:
        events = _events(trial / "tensorboard" / "finetune")
        assert [s.value for s in events.Scalars("loss")] == [pytest.approx(r["loss"], rel=1e-6) for r in _rows(trial, "finetune")]


def test_a_tracker_whose_extra_is_missing_is_refused_in_one_line_before_any_work(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    done = runner.invoke(app, ["run", str(SMOKE), "--run-dir", str(tmp_path / "r"), "--log-to", "tensorboard"])
    assert done.exit_code == 2 and "pip install 'tensorboard>=2.14'" in done.output and len(done.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    unknown = runner.invoke(app, ["run", str(SMOKE), "--run-dir", str(tmp_path / "r"), "--log-to", "wandb"])
    assert unknown.exit_code == 2 and "choose from tensorboard" in unknown.output


def _scalars(path) -> dict:
    events = _events(path)
    return {tag: [(s.step, s.value) for s in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_export_sends_a_finished_run_exactly_as_log_to_sent_it_live(tmp_path):
    live, later = tmp_path / "live", tmp_path / "later"
    assert runner.invoke(app, ["run", str(SMOKE), "--run-dir", str(live), "--log-to", "tensorboard"]).exit_code == 0
    assert runner.invoke(app, ["run", str(SMOKE), "--run-dir", str(later)]).exit_code == 0
    assert not (later / "tensorboard").exists()
    done = runner.invoke(app, ["export", str(later), "--to", "tensorboard", "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["exported"] == {str(later): [str(later / "tensorboard" / s) for s in ("pretrain", "finetune")]}
    for stage in ("pretrain", "finetune"):
        assert _scalars(later / "tensorboard" / stage) == _scalars(live / "tensorboard" / stage)


def test_export_of_a_sweep_gives_each_trial_and_base_one_run_and_an_approx_its_iterations(tmp_path):
    sweep, approx = tmp_path / "s", tmp_path / "a"
    sets = ["--set", "pretrain.epochs=2", "--set", "finetune.epochs=4", "--set", "finetune.log_every=2"]
    assert runner.invoke(app, ["sweep", str(SMOKE), "--grid", "adapter.rank=1,2", *sets, "--run-dir", str(sweep)]).exit_code == 0
    assert runner.invoke(app, ["approx", "--run-dir", str(approx)]).exit_code == 0
    done = runner.invoke(app, ["export", str(sweep), str(approx), "--to", "tensorboard", "--json"])
    assert done.exit_code == 0, done.output
    exported = json.loads(done.stdout)["exported"]
    runs = sorted(str(p.relative_to(sweep)) for p in map(Path, exported[str(sweep)]))
    assert runs == ["bases/base-0/tensorboard/pretrain", "trials/000-rank-1/tensorboard/finetune", "trials/001-rank-2/tensorboard/finetune"]
    rows = [r for r in map(json.loads, (approx / "metrics.jsonl").read_text().splitlines())]
    assert [step for step, _ in _scalars(approx / "tensorboard" / "approx")["loss"]] == [r["iteration"] for r in rows]
