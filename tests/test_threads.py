"""Threads chosen by the size of the work (never by the load), overridable, recorded."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lora_cli.runtime import threads
from lora_cli.cli import app
from lora_cli.config.loading import ApproxConfig, load_config
from lora_cli.runtime.resources import step_work
from tests.conftest import CONFIGS, ROOT, SMOKE, tiny_config

runner = CliRunner()


def test_step_work_is_counted_by_hand():
    cfg = tiny_config()  # n 512, 33 -> 32, batch 32, rank 1
    assert step_work(cfg, "pretrain") == 4 * 32 * 33 * 32 + 32 * 65
    assert step_work(cfg, "finetune") == 6 * 32 * 1 * 65 + 32 * 65
    assert step_work(cfg, "merge") == 2 * 512 * 33 * 32
    approx = load_config(CONFIGS / "approx.yaml", schema=ApproxConfig)
    assert step_work(approx, "approx") == 6 * 8 * 2 * 8


def test_small_steps_get_one_thread_and_the_blog_gets_every_core():
    smoke, blog = tiny_config(), load_config(CONFIGS / "posit.yaml")
    assert threads.choose(step_work(smoke, "pretrain")) == 1
    assert threads.choose(step_work(smoke, "finetune")) == 1
    for stage in ("pretrain", "finetune", "merge"):  # even rank 1 gains from a second thread (its gather)
        assert threads.choose(step_work(blog, stage)) == threads.cores()
    assert threads.choose(1.0, request=3) == 3


def test_threads_are_recorded_and_overridable(tmp_path, monkeypatch):
    result = runner.invoke(app, ["run", str(SMOKE), "--epochs", "1", "--run-dir", str(tmp_path / "a")])
    assert result.exit_code == 0
    stages = json.loads((tmp_path / "a" / "manifest.json").read_text())["stages"]
    assert stages["pretrain"]["threads"] == stages["finetune"]["threads"] == 1
    assert stages["merge"]["threads"] == threads.cores()
    assert runner.invoke(app, ["run", str(SMOKE), "--epochs", "1", "--threads", "2", "--run-dir", str(tmp_path / "b")]).exit_code == 0
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["stages"]["pretrain"]["threads"] == 2
    monkeypatch.setenv("LORA_THREADS", "2")
    assert runner.invoke(app, ["approx", "--iterations", "3", "--run-dir", str(tmp_path / "c")]).exit_code == 0
    assert json.loads((tmp_path / "c" / "manifest.json").read_text())["stages"]["approx"]["threads"] == 2


def test_two_threads_really_run_and_agree_with_one(tmp_path):
    """Smoke pretrains on one thread by choice; --threads 2 really trains on two (torch's setting
    as it trained, and the record), and ends where one thread does (float32 rounding apart)."""
    import torch
    from safetensors.torch import load_file

    for name, extra, expected in (("auto", [], 1), ("two", ["--threads", "2"], 2)):
        sets = ["--set", "pretrain.epochs=3"]
        assert runner.invoke(app, ["pretrain", "-c", str(SMOKE), *sets, "--run-dir", str(tmp_path / name), *extra]).exit_code == 0
        assert torch.get_num_threads() == expected  # pretraining is the command's last step
        assert json.loads((tmp_path / name / "manifest.json").read_text())["stages"]["pretrain"]["threads"] == expected
    one, two = (load_file(tmp_path / name / "base.safetensors")["weight"] for name in ("auto", "two"))
    torch.testing.assert_close(two, one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("args, env, fragment", [
    (["--threads", "0"], {}, "--threads = 0 is not allowed: must be a whole number ≥ 1"),
    (["--threads", "1.5"], {}, "--threads = 1.5 is not allowed"),
    ([], {"LORA_THREADS": "many"}, "LORA_THREADS = 'many' is not allowed"),
])
def test_bad_thread_counts_are_one_line(tmp_path, monkeypatch, args, env, fragment):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = runner.invoke(app, ["run", str(SMOKE), "--run-dir", str(tmp_path / "x"), *args])
    assert result.exit_code == 2 and result.stderr.count("error:") == 1 and fragment in result.stderr
    assert not (tmp_path / "x").exists()


def _spin_setting(env: dict[str, str]) -> str:
    code = "import os, lora_cli, torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.mark.process
def test_openmp_spins_briefly_unless_the_person_chose():
    assert _spin_setting({}) == threads.SPIN_ENV["GOMP_SPINCOUNT"]
    assert _spin_setting({"OMP_WAIT_POLICY": "ACTIVE"}) == "None"
    assert _spin_setting({"GOMP_SPINCOUNT": "123"}) == "123"
