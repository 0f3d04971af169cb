"""Every hint lora prints runs as printed (issue 22, classes 16-19): the command an interrupted
stage names, whatever flags started it; what a folder stopped as it started says; what a folder
of the wrong kind says fits it; and a sweep whose every trial failed does not exit 0."""

import re
import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.commands.output import Output
from tests.commands.procs import error_lines
from tests.conftest import SMOKE

runner = CliRunner()
TINY = ["--set", "pretrain.epochs=30", "--set", "finetune.epochs=30"]


def lora(*args):
    return runner.invoke(app, [str(a) for a in args])


def _stop_at(monkeypatch, point: int, signal: str) -> None:
    """Ctrl-C (or SIGTERM, which lora's handler turns into the same) once training reaches `point`."""

    @contextmanager
    def progress(self, label, epochs):
        def on_epoch(epoch, loss):
            if epoch >= point:
                raise KeyboardInterrupt(*(("SIGTERM",) if signal == "SIGTERM" else ()))

        yield on_epoch

    monkeypatch.setattr(Output, "progress", progress)


def _hint(stderr: str) -> list[str]:
    """The command in the one error line's last backticks, split as a shell splits it."""
    [line] = error_lines(stderr)
    commands = re.findall(r"`(lora [^`]+)`", line)
    assert commands, line
    words = shlex.split(commands[-1])
    assert words[0] == "lora"
    return words[1:]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hints") / "base"
    assert lora("pretrain", "-c", SMOKE, "--epochs", "5", "--run-dir", folder).exit_code == 0
    return folder


INTERRUPTED = {
    "run with flags": lambda d, base: ["run", SMOKE, *TINY, "--rank", "2", "--set", "shift.value=0.5", "--seed", "3", "--run-dir", d / "r"],
    "pretrain with flags": lambda d, base: ["pretrain", "-c", SMOKE, "--epochs", "30", "--seed", "2", "--run-dir", d / "p"],
    "finetune with flags": lambda d, base: ["finetune", "--run-dir", base, "--rank", "2", "--alpha", "4", "--epochs", "30", "--force"],
    "sweep": lambda d, base: ["sweep", SMOKE, "--grid", "adapter.rank=1,2", *TINY, "--run-dir", d / "s", "--no-plot"],
    "approx with flags": lambda d, base: ["approx", "--rank", "3", "--iterations", "2000", "--lr", "0.02", "--run-dir", d / "a"],
}


@pytest.mark.parametrize("signal", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", list(INTERRUPTED))
def test_the_hint_after_an_interrupt_runs_as_printed(pretrained, tmp_path, monkeypatch, command, signal):
    base = Path(str(tmp_path / "base"))
    lora("pretrain", "-c", SMOKE, "--epochs", "5", "--run-dir", base)
    with monkeypatch.context() as patch:
        _stop_at(patch, 500 if command.startswith("approx") else 12, signal)
        stopped = lora(*INTERRUPTED[command](tmp_path, base))
    assert stopped.exit_code == (143 if signal == "SIGTERM" else 130), stopped.output
    hint = _hint(stopped.stderr)
    finished = lora(*hint)
    assert finished.exit_code == 0, (hint, finished.output)


@pytest.mark.parametrize("force", [False, True], ids=["first merge", "merge again with --force"])
def test_the_hint_after_an_interrupted_merge_runs_as_printed(tmp_path, monkeypatch, force):
    folder = tmp_path / "r"
    assert lora("pretrain", "-c", SMOKE, "--epochs", "3", "--run-dir", folder).exit_code == 0
    assert lora("finetune", "--run-dir", folder, "--epochs", "3").exit_code == 0
    if force:
        assert lora("merge", "--run-dir", folder).exit_code == 0
    with monkeypatch.context() as patch:
        patch.setattr("lora_cli.recipes.pipeline.merge", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        stopped = lora("merge", "--run-dir", folder, *(["--force"] if force else []))
    assert stopped.exit_code == 130, stopped.output
    hint = _hint(stopped.stderr)
    assert lora(*hint).exit_code == 0, hint


def test_a_run_stopped_as_it_started_names_the_command_that_made_it(tmp_path, monkeypatch):
    folder = tmp_path / "k"
    args = ["run", str(SMOKE), "--epochs", "3", "--rank", "2", "--run-dir", str(folder)]
    with monkeypatch.context() as patch:
        patch.setattr(sys, "argv", ["lora", *args])  # what the lock file records, as a real start would
        patch.setattr("lora_cli.store.run_folder.RunFolder._write_manifest", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
        assert lora(*args).exit_code == 130
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "config.yaml"]
    refused = lora("run", "--resume", "--run-dir", folder)
    assert refused.exit_code == 1 and "a run stopped as it started" in refused.stderr
    assert lora(*_hint(refused.stderr)).exit_code == 0


def test_a_sweep_stopped_before_its_grid_resumes(tmp_path, monkeypatch):
    folder = tmp_path / "s"
    original = __import__("lora_cli.store.run_folder", fromlist=["RunFolder"]).RunFolder.save_json

    def stop_at_grid(self, rel, obj):
        if rel == "grid.json":
            raise KeyboardInterrupt()
        return original(self, rel, obj)

    with monkeypatch.context() as patch:
        patch.setattr("lora_cli.store.run_folder.RunFolder.save_json", stop_at_grid)
        assert lora("sweep", SMOKE, "--grid", "adapter.rank=1,2", *TINY, "--run-dir", folder).exit_code == 130
    assert not (folder / "grid.json").exists()
    resumed = lora("sweep", "--resume", folder, "--no-plot")
    assert resumed.exit_code == 0, resumed.output
    assert "grid.json: missing; written again from" in resumed.stderr and "2 of 2 trials complete" in resumed.stderr


def test_a_sweep_where_every_trial_fails_exits_1(tmp_path):
    failed = lora("sweep", SMOKE, "--grid", "finetune.lr=1e6,1e7", *TINY, "--run-dir", tmp_path / "s", "--no-plot")
    assert failed.exit_code == 1
    [line] = error_lines(failed.stderr)
    assert line.startswith("error: no trial completed: all 2 failed (first: finetune: the loss") and "results.csv" in line


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """A folder of each kind, and a tiny sweep spec."""
    root = tmp_path_factory.mktemp("kinds")
    assert lora("run", SMOKE, "--epochs", "3", "--run-dir", root / "pipeline").exit_code == 0
    assert lora("approx", "--iterations", "50", "--run-dir", root / "approx").exit_code == 0
    spec = root / "spec.yaml"
    spec.write_text(f"base: {SMOKE}\nconfig: {{pretrain: {{epochs: 3}}, finetune: {{epochs: 3}}}}\ngrid: {{adapter.rank: [1, 2]}}\n")
    assert lora("sweep", spec, "--run-dir", root / "sweep", "--no-plot").exit_code == 0
    return root


WRONG_KIND = {
    "merge an approx run": (["merge", "-r", "{approx}"], "is an approx run folder, not a pipeline run"),
    "finetune a sweep": (["finetune", "-r", "{sweep}"], "is a sweep run folder, not a pipeline run"),
    "merge a sweep": (["merge", "-r", "{sweep}"], "is a sweep run folder, not a pipeline run"),
    "import onto a sweep": (["merge", "--adapter", "{pipeline}/adapter", "-r", "{sweep}"], "is a sweep run folder"),
    "run a sweep spec": (["run", "{spec}"], "is a sweep spec, not a pipeline config"),
    "resume a pipeline run as a sweep": (["sweep", "--resume", "{pipeline}"], "is a pipeline run folder, not a sweep run"),
    "approx a pipeline config": (["approx", "-c", str(SMOKE)], "is a pipeline config, not an approx config"),
}


@pytest.mark.parametrize("case", list(WRONG_KIND))
def test_a_folder_or_file_of_the_wrong_kind_names_what_fits(kinds, case):
    args, fragment = WRONG_KIND[case]
    where = {"approx": kinds / "approx", "sweep": kinds / "sweep", "pipeline": kinds / "pipeline", "spec": kinds / "spec.yaml"}
    refused = lora(*[a.format(**where) if isinstance(a, str) else a for a in args])
    assert refused.exit_code in (1, 2), refused.output
    [line] = error_lines(refused.stderr)
    assert fragment in line
    advice = [shlex.split(c)[1:] for c in re.findall(r"`(lora [^`]+)`", line)]
    assert advice, line
    for command in advice:  # what it says fits does
        assert lora(*command).exit_code == 0, (command, line)
