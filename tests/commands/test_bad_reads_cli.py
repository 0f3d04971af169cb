"""Nothing lora reads is an internal error (issue 22, classes 4-15): damaged metrics, manifests
of another shape, records of the wrong type, non-finite numbers, values past what float32 or
the system can take, files that are not files, and streams that cannot be written. Each is one
line naming what and where, never a traceback; and a failed import leaves the merge as it was."""

import errno
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.commands.procs import error_lines, lora_run
from tests.conftest import ROOT, SMOKE

pytestmark = pytest.mark.process  # real lora processes: each start costs about a second

runner = CliRunner()


def _one_line(result, code: int = 1, *fragments: str) -> str:
    """The command failed with `code` and said so in one line holding every fragment."""
    stderr = result.stderr
    assert result.returncode == code, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    [line] = error_lines(stderr)
    for fragment in fragments:
        assert fragment in line, line
    return line


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reads") / "runs" / "r"
    done = lora_run("run", SMOKE, "--epochs", "5", "--run-dir", folder)
    assert done.returncode == 0, done.stderr
    return folder


def _copy(folder: Path, to: Path) -> Path:
    to.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(folder), str(to)], check=True)
    return to


def _edit_manifest(folder: Path, edit) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


# ---- 4: metrics.jsonl lines that are not rows --------------------------------------

BAD_LINES = {"bad JSON": "{bad\n", "a truncated last line": '{"stage": "finetune", "epo', "a list": "[1, 2]\n"}


@pytest.mark.parametrize("line", list(BAD_LINES))
def test_an_unreadable_metrics_line_is_one_line_and_resume_drops_it(finished, tmp_path, line):
    copy = _copy(finished, tmp_path / "r")
    number = len((copy / "metrics.jsonl").read_text().splitlines()) + 1
    with open(copy / "metrics.jsonl", "a") as f:
        f.write(BAD_LINES[line])
    _one_line(lora_run("plot", copy), 1, f"metrics.jsonl: line {number} is not a metrics row", f"lora run --resume --run-dir {copy}")
    resumed = lora_run("run", "--resume", "--run-dir", copy)
    assert resumed.returncode == 0 and "dropped 1 unreadable line" in resumed.stderr, resumed.stderr
    assert resumed.stderr.count("already complete, kept") == 3  # every stage's own rows were intact
    assert lora_run("plot", copy).returncode == 0


def test_a_damaged_trial_metrics_file_stops_plot_in_one_line(tmp_path):
    sweep = tmp_path / "s"
    done = lora_run("sweep", SMOKE, "--grid", "adapter.rank=1,2", "--set", "pretrain.epochs=2", "--set", "finetune.epochs=2",
                    "--run-dir", sweep, "--no-plot")
    assert done.returncode == 0, done.stderr
    (sweep / "trials/000-rank-1/metrics.jsonl").write_text("[]\n")
    _one_line(lora_run("plot", sweep), 1, "trials/000-rank-1/metrics.jsonl: line 1", f"lora sweep --resume {sweep}")


# ---- 5 and 6: manifests and records of another shape ------------------------------

MANIFEST_SHAPES = {
    "stages missing": lambda m: m.pop("stages"),
    "stages a list": lambda m: m.update(stages=[]),
    "stages a number": lambda m: m.update(stages=3),
    "files missing": lambda m: m.pop("files"),
    "files a list": lambda m: m.update(files=[]),
    "a file entry a string": lambda m: m["files"].update({"base.safetensors": "x"}),
    "format_version a string": lambda m: m.update(format_version="1"),
    "format_version true": lambda m: m.update(format_version=True),
    "children a list": lambda m: m.update(children=[]),
    "a path out of the folder": lambda m: m["files"].update({"../../x": {"sha256": "0" * 64, "bytes": 1}}),
    "final_loss a string": lambda m: m["stages"]["pretrain"].update(final_loss="x"),
    "final_loss null": lambda m: m["stages"]["pretrain"].update(final_loss=None),
    "status unknown": lambda m: m["stages"]["merge"].update(status="done"),
}


@pytest.mark.parametrize("shape", list(MANIFEST_SHAPES))
def test_a_manifest_of_another_shape_is_damaged_not_a_bug(finished, tmp_path, shape):
    runs = tmp_path / "runs"
    copy = _copy(finished, runs / "bad")
    _copy(finished, runs / "good")
    _edit_manifest(copy, MANIFEST_SHAPES[shape])
    _one_line(lora_run("merge", "-r", copy, "--force"), 1, "manifest.json: damaged (")
    _one_line(lora_run("plot", copy), 1, "manifest.json: damaged (")
    listed = lora_run("runs", "--root", runs, "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)["runs"]}
    assert "damaged (" in rows["bad"]["damaged"] and rows["good"]["stages"]["merge"]["status"] == "complete"


def test_a_record_field_of_the_wrong_type_is_damaged(finished, tmp_path):
    copy = _copy(finished, tmp_path / "r")
    _edit_manifest(copy, lambda m: m["stages"]["finetune"].update(rank="one"))
    resumed = lora_run("run", "--resume", "--run-dir", copy)
    assert resumed.returncode == 0 and "stages.finetune.rank is damaged" in resumed.stderr and "running finetune again" in resumed.stderr


# ---- 7: non-finite numbers, before anything is written -----------------------------

def _peft_folder(run: Path, to: Path, alpha=None, nan_tensor: bool = False) -> Path:
    to.mkdir()
    config = json.loads((run / "adapter/adapter_config.json").read_text())
    if alpha is not None:
        config["lora_alpha"] = alpha
    (to / "adapter_config.json").write_text(json.dumps(config))
    tensors = load_file(run / "adapter/adapter_model.safetensors")
    if nan_tensor:
        key = next(iter(tensors))
        tensors[key] = torch.full_like(tensors[key], float("inf"))
    save_file(tensors, to / "adapter_model.safetensors")
    return to


@pytest.mark.parametrize("alpha, fragment", [(float("nan"), "lora_alpha = NaN"), (float("inf"), "lora_alpha = Infinity"),
                                             (1e308, "merging gives non-finite weights"), (None, "holds NaN or infinite values")])
def test_a_non_finite_import_leaves_the_previous_merge_untouched(finished, tmp_path, alpha, fragment):
    copy = _copy(finished, tmp_path / "r")
    before = hashlib.sha256((copy / "merged.safetensors").read_bytes()).hexdigest()
    peft = _peft_folder(copy, tmp_path / "peft", alpha, nan_tensor=alpha is None)
    _one_line(lora_run("merge", "-r", copy, "--adapter", peft, "--force"), 1, fragment)
    assert hashlib.sha256((copy / "merged.safetensors").read_bytes()).hexdigest() == before
    assert json.loads((copy / "manifest.json").read_text())["stages"]["merge"]["status"] == "complete"


@pytest.mark.parametrize("rel", ["base.safetensors", "adapter/adapter_model.safetensors"])
def test_non_finite_tensors_with_their_hash_updated_are_refused(finished, tmp_path, rel):
    copy = _copy(finished, tmp_path / "r")
    tensors = load_file(copy / rel)
    key = next(iter(tensors))
    tensors[key][0, 0] = float("nan")
    save_file(tensors, copy / rel)
    _edit_manifest(copy, lambda m: m["files"][rel].update(sha256=hashlib.sha256((copy / rel).read_bytes()).hexdigest()))
    for command in (["plot", copy], ["merge", "-r", copy, "--force"]):
        _one_line(lora_run(*command), 1, f"{rel}: '{key}' holds NaN or infinite values", "repair it with `lora run --resume")


# ---- 8, 9, 11-15: bounds, the system, files that are not files, streams ------------

@pytest.mark.parametrize("args, fragment", [
    (["--alpha", "1e-300"], "must be ≥ 1e-12 (the scaling alpha / rank enters float32"),
    (["--alpha", "1e13"], "must be ≤ 1e12"),
    (["--threads", "99999"], "--threads = 99999 is out of range: must be ≤"),
])
def test_values_past_what_can_run_are_refused_with_the_reason(tmp_path, args, fragment):
    result = runner.invoke(app, ["run", str(SMOKE), *args, "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and fragment in result.stderr and not (tmp_path / "r").exists(), result.stderr


def test_the_extreme_alphas_allowed_run(tmp_path):
    for alpha in ("1e-12", "1e12"):
        result = runner.invoke(app, ["run", str(SMOKE), "--alpha", alpha, "--epochs", "2", "--run-dir", str(tmp_path / alpha)])
        assert result.exit_code in (0, 1) and "internal error" not in result.stderr, result.stderr  # 1: it diverged, said so


@pytest.mark.parametrize("env, fragment", [
    ({"LORA_THREADS": "30000"}, "LORA_THREADS = 30000 is out of range"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "not by torchrun (no MASTER_ADDR or MASTER_PORT); start the command with torchrun, or unset WORLD_SIZE"),
])
def test_environment_values_past_what_can_run(tmp_path, env, fragment):
    _one_line(lora_run("run", SMOKE, "--epochs", "1", "--run-dir", tmp_path / "r", env=env), 2, fragment)
    assert not (tmp_path / "r").exists()


def test_a_run_dir_name_longer_than_a_filesystem_takes(tmp_path):
    line = _one_line(lora_run("run", SMOKE, "--run-dir", tmp_path / ("a" * 300)), 1, "is 300 bytes, longer than the 255")
    assert len(line) < 200


def test_a_full_disk_while_taking_the_lock_is_one_line(tmp_path, monkeypatch):
    from lora_cli.store import locking

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(locking.os, "write", full)
    result = runner.invoke(app, ["run", str(SMOKE), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 1 and "internal error" not in result.stderr
    assert ".lock: cannot be written (No space left on device)" in result.stderr


@pytest.mark.parametrize("kind", ["device", "fifo", "huge"])
def test_configs_that_are_not_small_regular_files_are_refused_at_once(tmp_path, kind):
    path = {"device": Path("/dev/zero"), "fifo": tmp_path / "f.yaml", "huge": tmp_path / "h.yaml"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "huge":
        path.write_text("a" * (2**20 + 1))
    for command in (["validate", path], ["sweep", path, "--dry-run"]):
        fragment = "larger than 1 MiB" if kind == "huge" else "not a regular file"
        _one_line(lora_run(*command), 2, f"{path}: cannot be read as a config ({fragment})")


def test_an_empty_grid_key(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text(f'base: {SMOKE}\ngrid: {{"": [1]}}\n')
    _one_line(lora_run("sweep", spec, "--dry-run"), 2, "grid: a key is empty; name the config key to sweep")


def test_an_ascii_only_stream_gets_ascii(tmp_path):
    done = lora_run("run", SMOKE, "--epochs", "2", "--run-dir", tmp_path / "r", env={"PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr
    assert "+-------" in done.stdout and "Learned DeltaW against the truth" in done.stdout
    assert done.stdout.isascii() and done.stderr.isascii()


def test_a_stdout_that_cannot_be_written_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "lora_cli", "run", str(SMOKE), "--epochs", "2", "--run-dir", str(tmp_path / "r")],
                              stdout=full, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert error_lines(done.stderr) == ["error: standard output cannot be written (No space left on device); the run folder holds every result"]
