"""`lora sweep` end to end: trial folders that stand alone, failures recorded, resume, kills."""

import json
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.commands.procs import lora_process, wait_for
from tests.conftest import SMOKE

runner = CliRunner()
# two ranks, and a learning rate that makes half the trials diverge
GRID = ["--grid", "adapter.rank=1,2", "--grid", "finetune.lr=0.02,1e6", "--set", "finetune.epochs=10", "--set", "pretrain.epochs=10"]
# long enough to be killed mid-sweep: PiSSA and OLoRA trials run one by one after the batched group
LONG = f"""# Used by: tests (a sweep long enough to be killed between trials)
base: {SMOKE}
config: {{data: {{n: 4096, d_in: 96, d_out: 96}}, pretrain: {{epochs: 5}}, finetune: {{epochs: 60, batch_size: 32, lr: 0.005}}}}
grid: {{adapter.init: [normal, pissa, olora], adapter.rank: [2, 4]}}
"""


def lora(*args):
    return runner.invoke(app, [str(a) for a in args])


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _results(folder):
    return {row["trial"]: row for row in map(json.loads, (folder / "results.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep") / "s"
    result = lora("sweep", SMOKE, *GRID, "--run-dir", folder, "--json")
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout)


def test_diverging_trials_are_failed_and_the_others_complete(swept):
    folder, report = swept
    rows = {row["trial"]: row for row in report["trials"]}
    assert set(rows) == set(_results(folder)) and len(rows) == 4
    for trial, row in rows.items():
        entry = _manifest(folder)["trials"][trial]
        if row["finetune.lr"] == 1e6:
            assert row["status"] == entry["status"] == "failed" and "lower the learning rate" in entry["error"].lower()
            assert _manifest(folder / "trials" / trial)["stages"]["finetune"]["status"] == "failed"
        else:
            assert row["status"] == "complete" and row["final_loss"] < row["baseline_loss"]
            assert row["gap"] == pytest.approx(row["final_loss"] - row["optimal_loss"]) and row["optimal_loss"] <= row["final_loss"]
    csv_lines = (folder / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("trial,status,adapter.rank,finetune.lr") and len(csv_lines) == 5
    sweep = _manifest(folder)["stages"]["sweep"]
    assert (sweep["status"], sweep["complete"], sweep["failed"], sweep["trials"]) == ("complete", 2, 2, 4)


def test_figures_are_drawn_and_lora_plot_redraws_them(swept, tmp_path):
    folder, report = swept
    names = {"sweep_rank.png", "sweep_curves.png", "sweep_heatmap.png"}  # two axes: a heatmap too
    assert {Path(p).name for p in report["figures"]} == names == set(_manifest(folder)["figures"])
    assert all((folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in names)
    redrawn = lora("plot", folder, "--out", tmp_path / "figures", "--json")
    assert redrawn.exit_code == 0, redrawn.output
    assert {p.name for p in (tmp_path / "figures").iterdir()} == names


def test_a_trial_folder_stands_alone(swept):
    folder, report = swept
    trial = next(row for row in report["trials"] if row["status"] == "complete" and row["adapter.rank"] == 2)
    run_dir = folder / "trials" / trial["trial"]
    merged = lora("merge", "--run-dir", run_dir, "--json")
    assert merged.exit_code == 0, merged.output
    record = json.loads(merged.stdout)
    assert record["adapter_loss"] == pytest.approx(trial["final_loss"], rel=1e-4)
    base = (run_dir / "base.safetensors").stat()
    assert base.st_ino == (folder / "bases" / "base-0" / "base.safetensors").stat().st_ino  # linked, not copied


def test_resume_runs_only_what_is_not_complete(swept, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(swept[0], folder)
    before = _results(folder)
    redo = next(t for t, row in before.items() if row["status"] == "complete")
    keep = next(t for t, row in before.items() if row["status"] == "complete" and t != redo)
    child = folder / "trials" / redo / "manifest.json"
    data = json.loads(child.read_text())
    data["stages"]["finetune"]["status"] = "running"  # as a kill mid-trial leaves it
    child.write_text(json.dumps(data))
    kept_adapter = (folder / "trials" / keep / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    result = lora("sweep", "--resume", folder)
    assert result.exit_code == 0, result.output
    after = _results(folder)
    assert (folder / "trials" / keep / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == kept_adapter
    assert after[redo]["status"] == "complete" and after[redo]["final_loss"] == pytest.approx(before[redo]["final_loss"], rel=1e-5)
    assert [row["status"] for row in after.values()] == [row["status"] for row in before.values()]


def test_resume_trusts_a_trial_folder_over_a_manifest_that_lags_a_kill(swept, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(swept[0], folder)
    before = _results(folder)
    lagging = next(t for t, row in before.items() if row["status"] == "complete")
    manifest = _manifest(folder)
    manifest["trials"][lagging]["status"] = "running"  # killed after the trial's folder was complete
    (folder / "manifest.json").write_text(json.dumps(manifest))
    adapter = folder / "trials" / lagging / "adapter" / "adapter_model.safetensors"
    kept = adapter.stat().st_mtime_ns
    result = lora("sweep", "--resume", folder, "--no-plot")
    assert result.exit_code == 0, result.output
    after = _results(folder)
    assert after[lagging]["status"] == "complete" and after[lagging]["final_loss"] == before[lagging]["final_loss"]
    assert adapter.stat().st_mtime_ns == kept


def test_resume_refuses_a_changed_spec(swept, tmp_path):
    spec = tmp_path / "changed.yaml"
    spec.write_text(f"base: {SMOKE}\ngrid: {{adapter.rank: [1, 4], finetune.lr: [0.02, 1.0e6]}}\n")
    changed = lora("sweep", spec, "--resume", swept[0])
    assert changed.exit_code == 2 and "expands to other trials" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1


def test_fail_fast_stops_at_the_first_failure(tmp_path):
    result = lora("sweep", SMOKE, *GRID, "--run-dir", tmp_path / "s", "--fail-fast", "--no-plot")
    assert result.exit_code == 1 and "--fail-fast stops the sweep" in result.stderr
    assert f"continue with `lora sweep --resume {tmp_path / 's'}`" in result.stderr
    record = _manifest(tmp_path / "s")["stages"]["sweep"]  # not left "running", which reads as killed
    assert record["status"] == "failed" and "--fail-fast" in record["error"]


def test_dry_run_plans_without_writing(tmp_path, runs_dir):
    result = lora("sweep", SMOKE, "--grid", "adapter.rank=1,2", "--grid", "adapter.dora=false,true", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [(g["engine"], len(g["trials"])) for g in plan["groups"]] == [("batched", 2), ("reference", 1), ("reference", 1)]
    assert "DoRA" in plan["groups"][1]["why"] and plan["groups"][0]["bytes"] > 0
    assert not runs_dir.exists()


@pytest.mark.process
def test_sigkill_mid_sweep_then_resume_ends_as_an_uninterrupted_sweep(tmp_path):
    spec = tmp_path / "long.yaml"
    spec.write_text(LONG)
    whole = lora_process("sweep", str(spec), "--run-dir", str(tmp_path / "whole"), "--no-plot")
    assert whole.wait() == 0, whole.stderr.read()
    killed_dir = tmp_path / "killed"
    proc = lora_process("sweep", str(spec), "--run-dir", str(killed_dir), "--no-plot")
    done = lambda: sum(e.get("status") == "complete" for e in _safe_trials(killed_dir).values()) >= 2  # noqa: E731
    wait_for(done, proc, "two trials completed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    statuses = [e["status"] for e in _safe_trials(killed_dir).values()]
    assert "pending" in statuses or "running" in statuses, "the kill came after the sweep ended; make LONG longer"
    resumed = lora_process("sweep", "--resume", str(killed_dir), "--no-plot")
    assert not list(killed_dir.glob("*.png"))
    assert resumed.wait() == 0, resumed.stderr.read()
    expected, got = _results(tmp_path / "whole"), _results(killed_dir)
    assert list(got) == list(expected)
    for trial, row in expected.items():
        assert got[trial]["status"] == row["status"] == "complete"
        assert got[trial]["final_loss"] == pytest.approx(row["final_loss"], rel=1e-5)
    assert not list(killed_dir.rglob(".*.tmp"))


def _safe_trials(folder):
    try:
        return _manifest(folder).get("trials", {})
    except (OSError, ValueError):
        return {}
