"""Real `lora` subprocesses for tests that need a second process, a signal or a kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT

# A safety net only: each wait ends as soon as its event happens or the process exits.
LIMIT_S = 600.0


def lora_process(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """`lora ARGS` in a new process (stdout discarded, stderr kept)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.Popen([*prefix, sys.executable, "-m", "lora_cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=full_env, text=True)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Return as soon as `condition()` holds; fail saying what really happened otherwise:
    the process exited first (with its code and last error line), or the safety limit passed."""
    end = time.monotonic() + LIMIT_S
    while not condition():
        code = proc.poll()
        if code is not None:
            if condition():  # it happened just before the exit
                return
            last = (proc.stderr.read().strip().splitlines() or [""])[-1]
            pytest.fail(f"the process exited (code {code}) before {what}: {last}")
        if time.monotonic() > end:
            pytest.fail(f"still not {what} after {LIMIT_S:.0f} s, with the process running")
        time.sleep(0.002)


def stage(run_dir: Path, name: str) -> dict:
    """The manifest's record of a stage, or {} while the manifest is absent or being replaced."""
    try:
        return json.loads((run_dir / "manifest.json").read_text())["stages"].get(name, {})
    except (OSError, ValueError, KeyError):
        return {}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def lora_run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`lora ARGS` in a new process, waited for; stdout and stderr kept as text."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "lora_cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=LIMIT_S)
