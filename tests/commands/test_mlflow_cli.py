"""MLflow read back with its own client: every logged metric per epoch, the resolved config as
parameters, the final numbers equal to the manifest's, the folder's files as artifacts; a
sweep is a parent run with a nested run per trial and per base; `lora export` sends a
finished folder the same way; a failing tracker never stops the run."""

import json

import pytest
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE

pytest.importorskip("mlflow", reason="mlflow is not installed: .venv/bin/pip install -e '.[mlflow]'")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.slow
runner = CliRunner()
SMALL = ["--set", "pretrain.epochs=4", "--set", "finetune.epochs=4", "--set", "finetune.log_every=2", "--set", "pretrain.log_every=2"]


@pytest.fixture(autouse=True)
def _own_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _client(root):
    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def _runs(client, experiment):
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


def _rows(run_dir, stage):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["stage"] == stage]


def _history(client, run, metric):
    return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))


def _check_stage(client, run, run_dir, stage, record):
    rows = _rows(run_dir, stage)
    for metric in ("loss", "test_loss"):
        assert _history(client, run, metric) == [(r["epoch"], pytest.approx(r[metric], rel=1e-6)) for r in rows]
    for key in ("final_loss", "final_test_loss", "optimal_loss", "gap"):
        assert run.data.metrics[f"final/{key}"] == pytest.approx(record[key], rel=1e-6, abs=1e-12)
    assert run.info.status == "FINISHED" and run.data.tags["lora.stage"] == stage


def test_a_run_reaches_mlflow_metric_for_metric_with_its_config_and_files(tmp_path):
    root = tmp_path / "runs"
    run_dir = root / "r"
    done = runner.invoke(app, ["run", str(SMOKE), "--rank", "2", *SMALL, "--run-dir", str(run_dir), "--log-to", "mlflow", "--json"])
    assert done.exit_code == 0, done.output
    stages = json.loads(done.stdout)["stages"]
    client = _client(root)
    runs = _runs(client, "smoke")
    assert sorted(runs) == ["r/finetune", "r/pretrain"]
    for stage in ("pretrain", "finetune"):
        run = runs[f"r/{stage}"]
        _check_stage(client, run, run_dir, stage, stages[stage])
        assert run.data.params["adapter.rank"] == "2" and run.data.params["finetune.epochs"] == "4"
        local = client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path / stage))
        with open(local) as sent:  # the manifest as it stood when the stage completed
            assert json.load(sent)["stages"][stage] == json.loads((run_dir / "manifest.json").read_text())["stages"][stage]
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"manifest.json", "config.yaml"}


def test_a_sweep_is_a_parent_run_with_a_nested_run_per_trial_and_base(tmp_path):
    root = tmp_path / "runs"
    sweep = root / "s"
    done = runner.invoke(app, ["sweep", str(SMOKE), "--grid", "adapter.rank=1,2", *SMALL, "--run-dir", str(sweep), "--log-to", "mlflow", "--report"])
    assert done.exit_code == 0, done.output
    client = _client(root)
    runs = _runs(client, "smoke-sweep")
    parent = runs.pop("s")
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 2
    assert parent.data.params["grid.adapter.rank"] == "[1, 2]"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"manifest.json", "results.csv", "grid.json", "report.html"}
    trials = sorted(p.name for p in (sweep / "trials").iterdir())
    assert sorted(runs) == sorted([*trials, "base-0"])
    assert {r.data.tags["mlflow.parentRunId"] for r in runs.values()} == {parent.info.run_id}
    for trial in trials:
        record = json.loads((sweep / "trials" / trial / "manifest.json").read_text())["stages"]["finetune"]
        _check_stage(client, runs[trial], sweep / "trials" / trial, "finetune", record)


def test_export_sends_a_finished_folder_as_log_to_sends_it_live(tmp_path, monkeypatch):
    live, later = tmp_path / "live", tmp_path / "later"
    args = ["run", str(SMOKE), *SMALL, "--seed", "3"]
    assert runner.invoke(app, [*args, "--run-dir", str(live / "r"), "--log-to", "mlflow"]).exit_code == 0
    assert runner.invoke(app, [*args, "--run-dir", str(later / "r")]).exit_code == 0
    assert not (later / "mlflow.db").exists()
    sent = runner.invoke(app, ["export", str(later / "r"), "--to", "mlflow", "--json"])
    assert sent.exit_code == 0, sent.output
    assert len(json.loads(sent.stdout)["exported"][str(later / "r")]) == 2
    a, b = _runs(_client(live), "smoke"), _runs(_client(later), "smoke")
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].data.params == b[name].data.params and a[name].data.metrics == b[name].data.metrics
        assert _history(_client(live), a[name], "loss") == _history(_client(later), b[name], "loss")
    # MLFLOW_TRACKING_URI sends it elsewhere, its artifacts beside that store (not in ./mlruns)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "later")
    assert runner.invoke(app, ["export", str(later / "r"), "--to", "mlflow"]).exit_code == 0
    assert sorted(_runs(MlflowClient(f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"), "smoke")) == sorted(a)
    assert (tmp_path / "elsewhere" / "mlartifacts").is_dir() and not (tmp_path / "later" / "mlruns").exists()


def test_a_failing_tracker_says_so_in_one_line_and_the_run_completes(tmp_path, monkeypatch):
    from lora_cli.measure import mlflow as sink

    def broken(self, stage, point, baseline):
        raise OSError("disk full")

    monkeypatch.setattr(sink.Sink, "__call__", broken)
    run_dir = tmp_path / "runs" / "r"
    done = runner.invoke(app, ["run", str(SMOKE), *SMALL, "--run-dir", str(run_dir), "--log-to", "mlflow", "--json"])
    assert done.exit_code == 0, done.output
    warnings = [line for line in done.stderr.splitlines() if "--log-to mlflow failed" in line]
    assert warnings and "OSError: disk full" in warnings[0] and f"lora export {run_dir} --to mlflow" in warnings[0]
    assert json.loads(done.stdout)["stages"]["finetune"]["status"] == "complete"
