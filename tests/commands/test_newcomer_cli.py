"""What a newcomer hit (issue 9): the wrong run picked, NaN in JSON, the result saved after its
checkpoint was gone, damaged folders hidden, file modes, stale figures and leftovers."""

import json
import os
import subprocess
import sys
import warnings

import pytest
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.store.run_files import RunFiles
from lora_cli.errors import RunError
from tests.commands.procs import error_lines
from tests.conftest import ROOT, SMOKE

pytestmark = pytest.mark.process  # real lora processes: each start costs about a second

runner = CliRunner()


def lora(*args: str, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


# ---- bug 3: finetune and merge pick the newest run of the kind they need -----------


def test_finetune_and_merge_skip_a_newer_approx_run(runs_dir):
    assert lora("run", SMOKE, "--epochs", 2).exit_code == 0
    assert lora("approx", "--iterations", 5).exit_code == 0  # newer, and not a pipeline run
    for args in (["merge", "--force"], ["finetune", "--force", "--epochs", 1]):
        result = lora(*args)
        assert result.exit_code == 0, result.stderr
        assert "Using the newest pipeline run folder:" in result.stderr and "smoke-" in result.stderr


def test_no_pipeline_run_is_one_line(runs_dir):
    assert lora("approx", "--iterations", 5).exit_code == 0
    for command in ("merge", "finetune"):
        result = lora(command)
        assert result.exit_code == 1 and error_lines(result.stderr) == [
            f"error: no pipeline run folders in {runs_dir}/ (only approx); start one with `lora pretrain` or `lora run CONFIG`"
        ]


# ---- bug 6: degenerate sizes run cleanly, with strict JSON and no library warnings --


DEGENERATE = {
    "1x1 layer": ["run", SMOKE, "--set", "data.d_in=1", "--set", "data.d_out=1"],
    "one row": ["run", SMOKE, "--set", "data.n=1", "--set", "pretrain.batch_size=1", "--set", "finetune.batch_size=1"],
    "one epoch, logs rarer": ["run", SMOKE, "--epochs", 1, "--set", "pretrain.log_every=50", "--set", "finetune.checkpoint_every=7"],
    "full rank": ["run", SMOKE, "--rank", 32, "--epochs", 3],
    "approx 1x1": ["approx", "--d-in", 1, "--d-out", 1, "--rank", 1, "--iterations", 3],
}


@pytest.mark.parametrize("args", DEGENERATE.values(), ids=DEGENERATE.keys())
def test_degenerate_sizes_run_cleanly(tmp_path, args):
    run_dir = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = lora(*args, "--run-dir", run_dir, "--json", "--plot")
    assert result.exit_code == 0, result.output
    assert [str(w.message) for w in caught] == [] and "Warning" not in result.stderr
    _strict(result.stdout)
    _strict((run_dir / "manifest.json").read_text())
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        _strict(line)
    assert list(run_dir.glob("*.png"))


def test_one_by_one_delta_std_is_null_not_nan(tmp_path):
    result = lora(*DEGENERATE["1x1 layer"], "--run-dir", tmp_path / "r", "--json")
    assert _strict(result.stdout)["stages"]["merge"]["delta_std"] is None
    shown = lora("merge", "--run-dir", tmp_path / "r", "--force")
    assert "n/a (one element)" in shown.stdout


# ---- bug 7: a stage's result is durable before its checkpoint goes -----------------


@pytest.mark.parametrize("stage, rel", [("finetune", "adapter/adapter_model.safetensors"), ("pretrain", "base.safetensors")])
def test_a_failure_while_saving_the_result_keeps_the_checkpoint(tmp_path, monkeypatch, stage, rel):
    whole = tmp_path / "whole"
    assert lora("run", SMOKE, "--run-dir", whole).exit_code == 0
    save = RunFiles.save_tensors

    def fail_on_result(self, name, tensors, *a, **k):
        if name == rel:  # as if the process died, or the disk filled, at this instant
            raise RunError(f"{self.path / name}: cannot be written (No space left on device)")
        return save(self, name, tensors, *a, **k)

    broken = tmp_path / "broken"
    monkeypatch.setattr(RunFiles, "save_tensors", fail_on_result)
    assert lora("run", SMOKE, "--run-dir", broken).exit_code == 1
    monkeypatch.undo()
    assert (broken / "checkpoints" / f"{stage}.safetensors").is_file(), "the checkpoint outlives a failed save"
    resumed = lora("run", SMOKE, "--run-dir", broken, "--resume")
    assert resumed.exit_code == 0, resumed.output
    for name in ("base.safetensors", "adapter/adapter_model.safetensors", "merged.safetensors"):
        assert (broken / name).read_bytes() == (whole / name).read_bytes()


def test_finished_runs_keep_no_checkpoint_leftovers(tmp_path):
    assert lora("run", SMOKE, "--run-dir", tmp_path / "r").exit_code == 0  # checkpoints at epochs 10 and 20
    assert not (tmp_path / "r" / "checkpoints").exists()
    stages = json.loads((tmp_path / "r" / "manifest.json").read_text())["stages"]
    assert all("checkpoint_epoch" not in rec for rec in stages.values())


# ---- bug 8: a damaged folder is shown, with what to do ------------------------------


def test_a_damaged_run_folder_is_listed_and_explained(runs_dir):
    assert lora("run", SMOKE, "--epochs", 1, "--run-dir", runs_dir / "broken").exit_code == 0
    (runs_dir / "broken" / "manifest.json").write_text("{ not json")
    listing = lora("runs", env={"COLUMNS": "200"})
    assert listing.exit_code == 0
    row = next(line for line in listing.stdout.splitlines() if "broken" in line)
    assert "damaged" in row and "delete the folder" in listing.stdout
    entry = json.loads(lora("runs", "--json").stdout)["runs"][0]
    assert entry["name"] == "broken" and "unreadable" in entry["damaged"]
    forced = lora("run", SMOKE, "--run-dir", runs_dir / "broken", "--force")
    assert forced.exit_code == 1
    assert f"delete the folder (rm -r {runs_dir / 'broken'}) or choose another --run-dir" in error_lines(forced.stderr)[0]


# ---- polish ------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_run_files_respect_the_umask(tmp_path, umask, mode):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "lora_cli", "run", str(SMOKE), "--epochs", "1", "--run-dir", str(tmp_path / "r")]
    assert subprocess.run(args, env=env, preexec_fn=lambda: os.umask(umask), capture_output=True).returncode == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert modes and set(modes.values()) == {mode}, modes


def test_rerunning_a_stage_removes_the_figures_drawn_from_it(tmp_path):
    run_dir = tmp_path / "r"
    assert lora("run", SMOKE, "--epochs", 2, "--run-dir", run_dir, "--plot").exit_code == 0
    assert {p.name for p in run_dir.glob("*.png")} == {"pipeline_loss.png", "delta_heatmap.png", "delta_singular_values.png"}
    assert lora("merge", "--run-dir", run_dir, "--force").exit_code == 0
    assert len(list(run_dir.glob("*.png"))) == 3, "no figure draws the merge"
    assert lora("finetune", "--run-dir", run_dir, "--force", "--rank", 2).exit_code == 0
    assert list(run_dir.glob("*.png")) == []


COMMANDS = ["run", "pretrain", "finetune", "merge", "approx", "plot", "runs", "validate", "compare", "export", "sweep"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_types_on_flags_and_no_braces(command):
    text = lora(command, "--help", env={"COLUMNS": "160"}).stdout
    assert "<bool>" not in text and "{" not in text and "Usage: lora " + command in text
    if command == "approx":
        assert "posit.yaml" not in text and "finetune." not in text and "configs/approx.yaml" in text


def test_a_set_that_breaks_another_key_is_blamed(runs_dir):
    errors = error_lines(lora("run", SMOKE, "--set", "data.n=10").stderr)
    assert errors and all(e.startswith("error: --set: ") for e in errors)
    assert "pretrain.batch_size = 32 is out of range: must be ≤ data.n = 10" in errors[0]


@pytest.mark.parametrize("args", [["--rank", "2.0"], ["--rank", "1.5"], ["--rank", "x"], ["--set", "adapter.rank=2.0"]])
def test_numbers_on_flags_follow_one_rule(runs_dir, args):
    result = lora("run", SMOKE, *args)
    assert result.exit_code == 2 and len(error_lines(result.stderr)) == 1
    assert "adapter.rank = " in result.stderr and "is not allowed: must be a whole number" in result.stderr


def test_runs_names_are_relative_and_unbroken_at_80_columns(runs_dir):
    name = "rank-sweep-alpha-8-kaiming"
    assert lora("run", SMOKE, "--epochs", 1, "--set", f"name={name}").exit_code == 0
    folder = next(runs_dir.iterdir()).name
    rows = [line for line in lora("runs", env={"COLUMNS": "80"}).stdout.splitlines() if line.startswith("│")]
    assert any(f"│ {folder} " in row for row in rows), rows
    assert not any(str(runs_dir) in row for row in rows) and any("complete" in row for row in rows)


def test_an_empty_runs_dir_variable_means_the_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LORA_RUNS_DIR", "")
    assert lora("run", SMOKE, "--epochs", 1).exit_code == 0
    assert [p.parent.name for p in tmp_path.glob("*/smoke-*")] == ["runs"]
