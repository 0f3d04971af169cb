"""Nothing lost, nothing misleading: kills, resume, integrity refusals, divergence, determinism."""

import csv
import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.store.files import sha256_bytes
from tests.commands.procs import error_lines, lora_process, stage, wait_for
from tests.conftest import SMOKE

pytestmark = pytest.mark.process  # real lora processes: each start costs about a second

runner = CliRunner()
LONG = """\
# Used by: tests (long enough to be killed mid-stage)
name: long
data: {n: 512, d_in: 33, d_out: 32}
pretrain: {epochs: 120, batch_size: 16, lr: 0.01, log_every: 10, checkpoint_every: 5}
finetune: {epochs: 120, batch_size: 16, lr: 0.01, log_every: 10, checkpoint_every: 5}
"""


def _hashes(run_dir: Path) -> dict[str, str]:
    files = json.loads((run_dir / "manifest.json").read_text())["files"]
    assert {k: sha256_bytes((run_dir / k).read_bytes()) for k in files} == {k: v["sha256"] for k, v in files.items()}
    return {k: v["sha256"] for k, v in files.items()}


def _everything_loads(run_dir: Path) -> None:
    """Every file of the run is whole. A kill mid-write leaves at most a hidden .tmp beside
    the file it was replacing, which the next stage sweeps away."""
    for path in run_dir.rglob("*"):
        if path.name.startswith(".") and path.name.endswith(".tmp") or path.name == ".lock":
            continue
        if path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".csv":  # a header, then rows of its width
            rows = list(csv.reader(path.read_text().splitlines()))
            assert rows and all(len(row) == len(rows[0]) for row in rows), path
        elif path.is_file():
            pytest.fail(f"unexpected file left behind: {path}")


KILL_POINTS = {
    "as the run starts": lambda d: (d / "manifest.json").exists(),
    "after a pretrain checkpoint": lambda d: (d / "checkpoints" / "pretrain.safetensors").exists(),
    "after pretraining": lambda d: stage(d, "pretrain").get("status") == "complete",
    "after a finetune checkpoint": lambda d: (d / "checkpoints" / "finetune.safetensors").exists(),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill")
    (folder / "long.yaml").write_text(LONG)
    proc = lora_process("run", str(folder / "long.yaml"), "--run-dir", str(folder / "whole"))
    assert proc.wait() == 0, proc.stderr.read()
    return folder, _hashes(folder / "whole")


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_resume_ends_bit_identical(uninterrupted, point):
    folder, expected = uninterrupted
    run_dir = folder / point.replace(" ", "-")
    proc = lora_process("run", str(folder / "long.yaml"), "--run-dir", str(run_dir))
    wait_for(lambda: KILL_POINTS[point](run_dir), proc, point)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _everything_loads(run_dir)
    if point != "as the run starts":  # with a checkpoint or a finished stage, starting over needs --force
        refused = runner.invoke(app, ["run", str(folder / "long.yaml"), "--run-dir", str(run_dir)])
        assert refused.exit_code == 1 and ("--resume" in refused.stderr or "--force" in refused.stderr)
    resumed = lora_process("run", str(folder / "long.yaml"), "--run-dir", str(run_dir), "--resume")
    assert resumed.wait() == 0, resumed.stderr.read()
    assert _hashes(run_dir) == expected
    assert not (run_dir / "checkpoints" / "pretrain.safetensors").exists()
    assert not list(run_dir.rglob(".*.tmp")), "leftovers of the killed write are swept"


def test_same_seed_same_bytes_across_processes(tmp_path):
    procs = [lora_process("run", str(SMOKE), "--epochs", "4", "--run-dir", str(tmp_path / name)) for name in "ab"]
    assert [p.wait() for p in procs] == [0, 0]
    assert _hashes(tmp_path / "a") == _hashes(tmp_path / "b")


# ---- refusals on a finished run -----------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert runner.invoke(app, ["run", str(SMOKE), "--epochs", "3", "--run-dir", str(run_dir)]).exit_code == 0
    return run_dir


def _copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "copy"))


def _replace_tensor_file(run_dir: Path, rel: str, tensors: dict) -> None:
    """Write a well-formed file and record its hash, so only the content check can object."""
    data = save(tensors)
    (run_dir / rel).write_bytes(data)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["files"][rel] = {"sha256": sha256_bytes(data), "bytes": len(data)}
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def _merge_fails(run_dir: Path, *fragments: str) -> None:
    result = runner.invoke(app, ["merge", "--run-dir", str(run_dir), "--force"])
    assert result.exit_code == 1, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0]


def test_merge_refuses_a_missing_base(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    (run_dir / "base.safetensors").unlink()
    _merge_fails(run_dir, "base.safetensors: missing", "repair it with `lora run --resume --run-dir")


def test_merge_refuses_a_truncated_base(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    path = run_dir / "base.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    _merge_fails(run_dir, "does not match the SHA-256")


def test_merge_refuses_an_altered_adapter(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    path = run_dir / "adapter" / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    _merge_fails(run_dir, "adapter_model.safetensors: does not match the SHA-256")


def test_merge_refuses_wrong_shapes_and_dtypes(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    _replace_tensor_file(run_dir, "base.safetensors", {"weight": torch.zeros(33, 32)})
    _merge_fails(run_dir, "expected 'weight' of shape (32, 33) float32, found (33, 32)")
    _replace_tensor_file(run_dir, "base.safetensors", {"weight": torch.zeros(32, 33, dtype=torch.float64)})
    _merge_fails(run_dir, "found (32, 33) torch.float64")


def test_merge_refuses_an_adapter_of_the_wrong_shape(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    wrong = {"base_model.model.linear.lora_A.weight": torch.zeros(2, 33), "base_model.model.linear.lora_B.weight": torch.zeros(32, 2)}
    _replace_tensor_file(run_dir, "adapter/adapter_model.safetensors", wrong)
    _merge_fails(run_dir, "expected 'base_model.model.linear.lora_A.weight' of shape (1, 33) float32, found (2, 33)")


def test_merge_refuses_a_base_the_adapter_was_not_trained_on(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    _replace_tensor_file(run_dir, "base.safetensors", {"weight": torch.ones(32, 33)})
    _merge_fails(run_dir, "is not the base the adapter was trained on")


def test_pretrain_into_a_finished_run_needs_force(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    refused = runner.invoke(app, ["pretrain", "-c", str(SMOKE), "--epochs", "1", "--run-dir", str(run_dir)])
    assert refused.exit_code == 1 and "pass --force" in refused.stderr
    assert (run_dir / "merged.safetensors").exists(), "a refusal touches nothing"
    forced = runner.invoke(app, ["pretrain", "-c", str(SMOKE), "--epochs", "1", "--run-dir", str(run_dir), "--force"])
    assert forced.exit_code == 0
    assert not (run_dir / "merged.safetensors").exists() and not (run_dir / "adapter" / "adapter_model.safetensors").exists()


def test_divergence_stops_the_stage_and_leaves_no_result(tmp_path):
    result = runner.invoke(app, ["run", str(SMOKE), "--set", "pretrain.lr=1e6", "--run-dir", str(tmp_path / "d")])
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: pretrain: the loss") and "(step 16)" in error and "--set pretrain.lr=" in error
    record = json.loads((tmp_path / "d" / "manifest.json").read_text())["stages"]["pretrain"]
    assert record["status"] == "failed" and "Lower the learning rate" in record["error"]
    assert not (tmp_path / "d" / "base.safetensors").exists()


def test_impossible_sizes_are_refused_before_anything_is_written(tmp_path):
    result = runner.invoke(app, ["run", str(SMOKE), "--set", "data.n=100000000000", "--run-dir", str(tmp_path / "m")])
    assert result.exit_code == 1 and "needs about" in result.stderr and "is available" in result.stderr
    assert not (tmp_path / "m").exists()


def test_unwritable_run_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["run", str(SMOKE), "--run-dir", str(tmp_path / "file" / "sub")])
    assert result.exit_code == 1 and "cannot be written" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(
    "sig, code, point",
    [(signal.SIGINT, 130, "after a finetune checkpoint"), (signal.SIGTERM, 143, "after a pretrain checkpoint")],
    ids=["ctrl-c", "sigterm"],
)
def test_interrupt_says_where_it_stopped_and_resumes_bit_identical(uninterrupted, sig, code, point):
    folder, expected = uninterrupted
    run_dir = folder / f"signal-{sig.name}"
    proc = lora_process("run", str(folder / "long.yaml"), "--run-dir", str(run_dir))
    wait_for(lambda: KILL_POINTS[point](run_dir), proc, point)
    proc.send_signal(sig)
    assert proc.wait() == code
    errors = error_lines(proc.stderr.read())
    name = "finetune" if "finetune" in point else "pretrain"
    assert len(errors) == 1 and f"error: {name} interrupted at epoch " in errors[0] and f"by {sig.name}" in errors[0]
    record = stage(run_dir, name)
    assert record["status"] == "interrupted" and record["checkpoint_epoch"] % 5 == 0 and record["signal"] == sig.name
    listing = runner.invoke(app, ["runs", "--root", str(folder)], env={"COLUMNS": "200"}).stdout
    assert f"resumable from epoch {record['checkpoint_epoch']}" in listing
    command = errors[0].split("continue with `")[1].rstrip("`").split()  # run exactly what it says
    assert command[:2] == ["lora", "run"] and "--resume" in command
    resumed = lora_process(*command[1:])
    assert resumed.wait() == 0, resumed.stderr.read()
    assert _hashes(run_dir) == expected
