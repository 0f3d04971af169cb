"""One writer per run folder, and a folder nobody can write: real processes, real locks, real mounts."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.store.files import sha256_bytes
from tests.commands.procs import error_lines, lora_process, stage, wait_for
from tests.conftest import ROOT, SMOKE

pytestmark = pytest.mark.process  # real lora processes: each start costs about a second

runner = CliRunner()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert runner.invoke(app, ["run", str(SMOKE), "--epochs", "3", "--run-dir", str(run_dir)]).exit_code == 0
    return run_dir


def _lora(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*prefix, sys.executable, "-m", "lora_cli", *args], capture_output=True, text=True, env=env)


def _file_hashes(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_bytes(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_writer_is_refused_and_the_first_finishes_cleanly(finished, tmp_path):
    run_dir = shutil.copytree(finished, tmp_path / "conc")
    first = lora_process("finetune", "--run-dir", str(run_dir), "--force", "--rank", "2", "--epochs", "200")
    wait_for(lambda: stage(run_dir, "finetune").get("status") == "running", first, "the first finetune started")
    os.kill(first.pid, signal.SIGSTOP)  # hold it mid-stage, lock held, however fast this machine is
    try:
        second = _lora("finetune", "--run-dir", str(run_dir), "--force", "--rank", "3")
        listing = _lora("runs", "--root", str(tmp_path), "--json")
        for_plot = _lora("plot", str(run_dir))
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait() == 0, first.stderr.read()
    assert second.returncode == 1 and len(error_lines(second.stderr)) == 1
    line = error_lines(second.stderr)[0]
    assert str(run_dir) in line and f"pid {first.pid}" in line and "--rank 2" in line and "wait for it" in line
    assert for_plot.returncode == 1 and f"pid {first.pid}" in for_plot.stderr
    shown = json.loads(listing.stdout)["runs"][0]
    assert shown["stages"]["finetune"]["status"] == "running" and shown["running_in"].startswith(f"pid {first.pid}")
    # only the first writer's work is in the folder, and it is consistent
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["finetune"]["rank"] == 2
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["adapter"]["rank"] == 2
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["stage"] == "finetune"] == list(range(0, 201, 5))
    assert runner.invoke(app, ["merge", "--run-dir", str(run_dir)]).exit_code == 0


def test_the_lock_dies_with_its_process(finished, tmp_path):
    run_dir = shutil.copytree(finished, tmp_path / "killed")
    first = lora_process("finetune", "--run-dir", str(run_dir), "--force", "--epochs", "100000")
    wait_for(lambda: stage(run_dir, "finetune").get("status") == "running", first, "the finetune started")
    first.send_signal(signal.SIGKILL)
    first.wait()
    listing = runner.invoke(app, ["runs", "--root", str(tmp_path), "--json"])
    assert json.loads(listing.stdout)["runs"][0]["stages"]["finetune"]["status"] == "interrupted"
    assert runner.invoke(app, ["finetune", "--run-dir", str(run_dir), "--force", "--epochs", "2"]).exit_code == 0


def _read_only_prefix(folder) -> tuple[str, ...]:
    """A command prefix under which `folder` cannot be written, not even by root."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return ()
    script = 'd=$1; shift; mount --bind "$d" "$d" && mount -o remount,bind,ro "$d" "$d" && exec "$@"'
    prefix = ("unshare", "-rm", "sh", "-c", script, "sh", str(folder))
    if not shutil.which("unshare") or subprocess.run([*prefix, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without a private mount namespace: no way to make a folder read-only")
    return prefix


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--run-dir", "{run}", "--force"],
        ["merge", "--run-dir", "{run}", "--force"],
        ["pretrain", "-c", str(SMOKE), "--run-dir", "{run}", "--force"],
        ["run", str(SMOKE), "--run-dir", "{run}", "--force"],
        ["plot", "{run}"],
    ],
    ids=lambda args: args[0],
)
def test_a_read_only_run_folder_is_one_clear_line(finished, tmp_path, args):
    run_dir = shutil.copytree(finished, tmp_path / "ro")
    before = _file_hashes(run_dir)
    prefix = _read_only_prefix(run_dir)
    try:
        result = _lora(*[a.replace("{run}", str(run_dir)) for a in args], prefix=prefix)
    finally:
        for path in [run_dir, *run_dir.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "cannot be written" in errors[0] and "check the folder is writable" in errors[0]
    assert "bug" not in errors[0]
    assert _file_hashes(run_dir) == before, "a refused command changes nothing"
