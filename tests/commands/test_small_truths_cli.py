"""Wording and small truths (issue 22, the low list): numbers never cut, one line per problem
with its real source, values echoed short, refusals for settings a grid would ignore, runs
roots that are not folders, PEFT configs of the wrong types, what an import changes in `lora
runs` and `lora plot`, a shift that changes nothing, help that says what a flag does, and
`lora runs` and the dry run telling the whole truth."""

import json
import re
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.commands.output import Output
from tests.conftest import SMOKE

runner = CliRunner()
SHORT = ["--set", "pretrain.epochs=3", "--set", "finetune.epochs=3"]


def lora(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def _errors(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error")]


def test_numbers_and_prose_are_never_cut_in_a_log(tmp_path):
    result = lora("sweep", SMOKE, "--grid", "adapter.rank=1,2,3", *SHORT, "--run-dir", tmp_path / "s", "--no-plot")
    assert result.exit_code == 0 and "…" not in result.stdout, result.stdout
    rows = [json.loads(line) for line in (tmp_path / "s/results.jsonl").read_text().splitlines()]
    for row in rows:  # each final loss appears whole, as the table formats it
        assert f"{row['final_loss']:.6f}"[:6] in result.stdout or f"{row['final_loss']:.4e}" in result.stdout
    run = lora("run", SMOKE, "--epochs", "3", "--run-dir", tmp_path / "r")
    optima = [line for line in run.stdout.splitlines() if line.startswith("Optimum ")]
    assert len(optima) == 2 and all(re.search(r"; gap \d\.\d+e[+-]\d+$", line) for line in optima), run.stdout


def test_config_problems_name_their_source_once_and_echo_values_short(tmp_path):
    unknown = lora("run", SMOKE, "--set", "nokey.x=1", "--set", "adapter.foo=2")
    assert sorted(_errors(unknown)) == [
        "error: --set: unknown key adapter.foo; did you mean adapter.method? (keys in adapter: method, rank, alpha, init, scaling, lr_ratio, gamma)",
        "error: --set: unknown key nokey (keys in the top level: name, seed, data, shift, adapter, pretrain, finetune)",
    ]
    spec = tmp_path / "u.yaml"
    spec.write_text(f"base: {SMOKE}\ngrid: {{adapter.rank: [null, .nan, [1]]}}\n")
    union = lora("sweep", spec, "--dry-run")
    assert len(_errors(union)) == 3 and all("must be a number, true or false, or a word" in line for line in _errors(union))
    huge = tmp_path / "h.yaml"
    huge.write_text("name: " + "x" * 100_000 + "\n")
    [line] = _errors(lora("validate", huge))
    assert len(line) < 300 and "xxx…" in line


def test_a_grid_refuses_what_it_would_ignore(tmp_path):
    assert _errors(lora("sweep", SMOKE, "--grid", "adapter.rank=1,,2", "--dry-run")) == [
        "error: --grid 'adapter.rank=1,,2': a value between commas is empty; give KEY=V1,V2,…"]
    assert _errors(lora("sweep", SMOKE, "--grid", "adapter.rank=1,2", "--set", "adapter.rank=3", "--dry-run")) == [
        "error: --set: adapter.rank is swept by the grid, so a value here would be ignored; leave it out"]
    spec = tmp_path / "s.yaml"
    spec.write_text(f"base: {SMOKE}\nconfig: {{adapter: {{rank: 2}}}}\ngrid: {{adapter.rank: [1, 3]}}\n")
    assert "config: adapter.rank is swept by the grid" in lora("sweep", spec, "--dry-run").stderr


def test_runs_roots_that_are_not_folders(tmp_path):
    assert _errors(lora("runs", "--root", SMOKE)) == [
        f"error: {SMOKE}: is a file, not a folder of run folders; give the folder with --root (or $LORA_RUNS_DIR)"]
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    dangling = lora("run", SMOKE, "--epochs", "1", env={"LORA_RUNS_DIR": str(tmp_path / "dangling")})
    assert _errors(dangling) == [f"error: {tmp_path / 'dangling'}: is a link to {tmp_path / 'nowhere'}, which does not exist; create that folder or choose another runs root"]
    home = lora("run", SMOKE, "--epochs", "1", env={"LORA_RUNS_DIR": "~/x", "HOME": str(tmp_path / "home")})
    assert home.exit_code == 0 and len(list((tmp_path / "home/x").iterdir())) == 1


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("truths") / "r"
    assert lora("run", SMOKE, "--epochs", "3", "--run-dir", folder).exit_code == 0
    return folder


def _peft(finished: Path, to: Path, config: dict | None = None, tensors=None) -> Path:
    to.mkdir()
    saved = json.loads((finished / "adapter/adapter_config.json").read_text()) | (config or {})
    (to / "adapter_config.json").write_text(json.dumps(saved))
    save_file(tensors or load_file(finished / "adapter/adapter_model.safetensors"), to / "adapter_model.safetensors")
    return to


@pytest.mark.parametrize("config, fragment", [({"r": True}, "r = true must be a whole number"),
                                              ({"use_rslora": "yes"}, 'use_rslora = "yes" must be true or false')])
def test_a_peft_config_of_the_wrong_types_is_refused(finished, tmp_path, config, fragment):
    peft = _peft(finished, tmp_path / "p", config)
    [line] = _errors(lora("merge", "-r", finished, "--adapter", peft, "--force"))
    assert fragment in line


def test_peft_tensors_by_their_own_names(finished, tmp_path):
    own = load_file(finished / "adapter/adapter_model.safetensors")
    ints = {key: tensor.to(torch.int64) for key, tensor in own.items()}
    [line] = _errors(lora("merge", "-r", finished, "--adapter", _peft(finished, tmp_path / "i", tensors=ints), "--force"))
    assert "holds int64 numbers; an adapter's tensors are floating point" in line
    renamed = {key.replace("base_model.model.linear", "base_model.model.q_proj"): t for key, t in own.items()}
    wide = {k: torch.zeros(1, 40) if "lora_A" in k else t for k, t in renamed.items()}
    [line] = _errors(lora("merge", "-r", finished, "--adapter", _peft(finished, tmp_path / "w", tensors=wide), "--force"))
    assert "base_model.model.q_proj.lora_A.weight has shape (1, 40)" in line
    bare = {key.rsplit("linear.", 1)[1]: t for key, t in own.items()}  # lora_A.weight, lora_B.weight
    assert lora("merge", "-r", finished, "--adapter", _peft(finished, tmp_path / "b", tensors=bare), "--force").exit_code == 0
    moved = lora("merge", "-r", finished, "--adapter", _peft(finished, tmp_path / "q", {"target_modules": ["q_proj"]}, renamed), "--force")
    assert moved.exit_code == 0 and "adapt base_model.model.q_proj (target_modules ['q_proj']); merged onto this run's one linear layer" in moved.stderr


def test_an_import_shows_in_runs_and_in_the_figures(finished, tmp_path):
    import shutil

    from lora_cli.show.figures import _learned_delta
    from lora_cli.stages.kinds import open_run, run_config
    from lora_cli.stages.pipeline import load_base

    folder = Path(shutil.copytree(finished, tmp_path / "runs" / "r"))
    own = load_file(folder / "adapter/adapter_model.safetensors")
    doubled = {key: 2 * t for key, t in own.items()}
    peft = _peft(finished, tmp_path / "p", {"use_rslora": True}, doubled)
    assert lora("merge", "-r", folder, "--adapter", peft, "--force").exit_code == 0
    listing = lora("runs", "--root", tmp_path / "runs")
    assert f"merge complete" in listing.stdout and f"(imported adapter {peft.resolve()})" in listing.stdout
    run = open_run(folder, lock=None)
    cfg = run_config(run)
    delta, label, rank = _learned_delta(run, cfg, load_base(run, cfg))
    merged = load_file(folder / "merged.safetensors")["weight"] - load_file(folder / "base.safetensors")["weight"]
    assert label == "imported adapter's ΔW = W' − W" and torch.equal(delta, merged) and rank == 1
    assert lora("plot", folder).exit_code == 0


def test_a_shift_that_changes_nothing_is_said(tmp_path):
    run = lora("run", SMOKE, "--set", "shift.kind=scale", "--epochs", "2", "--run-dir", tmp_path / "r")
    assert "shift.kind scale with shift.value 1 leaves θ unchanged (θ2 = θ): the adapter has nothing to learn" in run.stderr
    sweep = lora("sweep", SMOKE, "--grid", "shift.kind=add,scale", "--dry-run")
    assert "trial 001-kind-scale: shift.kind scale with shift.value 1 leaves θ unchanged" in sweep.stderr


def test_help_says_what_each_flag_does():
    assert "runs/<name>-sweep-<UTC" in lora("sweep", "--help").stdout
    assert "Replace FILE when it exists." in lora("data", "--help").stdout
    assert "sweep spec" in lora("validate", "--help").stdout
    assert _errors(lora("sweep", "--resume", "runs/nonexist")) == [
        "error: runs/nonexist: no such run folder; start one with `lora sweep SPEC`, or list them with `lora runs`"]


@contextmanager
def _stop_at(monkeypatch, epoch: int, bar: int = 1):
    """Ctrl-C at `epoch` of the `bar`-th piece of training (a sweep's base, then its groups)."""
    bars = []

    @contextmanager
    def progress(self, label, epochs):
        bars.append(label)

        def on_epoch(at, loss, nth=len(bars)):
            if nth >= bar and at >= epoch:
                raise KeyboardInterrupt()

        yield on_epoch

    with monkeypatch.context() as patch:
        patch.setattr(Output, "progress", progress)
        yield


def test_runs_tells_an_interrupted_sweep_and_a_damaged_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    with _stop_at(monkeypatch, 2, bar=3):  # the base, the batched normal trial, then the PiSSA trial alone
        assert lora("sweep", SMOKE, "--grid", "adapter.init=normal,pissa", *SHORT, "--run-dir", root / "s").exit_code == 130
    with _stop_at(monkeypatch, 12):
        assert lora("run", SMOKE, "--epochs", "30", "--run-dir", root / "t").exit_code == 130
    checkpoint = root / "t/checkpoints/pretrain.safetensors"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    listing = lora("runs", "--root", root, env={"COLUMNS": "300"}).stdout
    assert "sweep interrupted, 1 of 2 trials complete" in listing
    assert "pretrain interrupted, its checkpoint damaged (start it over with --force)" in listing


def test_an_interrupt_after_the_last_epoch_keeps_the_training(tmp_path, monkeypatch):
    folder = tmp_path / "r"
    with monkeypatch.context() as patch:
        patch.setattr("lora_cli.recipes.pipeline.pretrain_optimum", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt()))
        assert lora("pretrain", "-c", SMOKE, "--epochs", "7", "--run-dir", folder).exit_code == 130
    resumed = lora("pretrain", "--resume", "--run-dir", folder, "--json")
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["resumed_from_epoch"] == 7


def test_the_dry_run_counts_everything_and_warns_of_memory():
    plan = lora("sweep", SMOKE, "--grid", "adapter.rank=1,2", "--dry-run", "--json")
    estimate = json.loads(plan.stdout)["seconds"]
    assert set(estimate) == {"pretraining", "training", "other"} and all(v > 0 for v in estimate.values())
    assert "pretraining" in plan.stderr and "start-up and results" in plan.stderr
    huge = lora("sweep", SMOKE, "--grid", "adapter.rank=1,2", "--set", "data.n=4000000", "--set", "data.d_in=4000",
                "--set", "data.d_out=4000", "--dry-run")
    assert huge.exit_code == 0 and "Warning: a group of 2 trials needs about" in huge.stderr and "lora sweep would refuse it" in huge.stderr


def test_a_complete_stage_whose_result_is_gone_is_not_called_complete(finished, tmp_path):
    import shutil

    folder = Path(shutil.copytree(finished, tmp_path / "r"))
    (folder / "merged.safetensors").unlink()
    assert _errors(lora("merge", "-r", folder)) == [
        f"error: {folder}: merge is recorded complete, but {folder}/merged.safetensors: missing; pass --force to run it again"]
    assert lora("merge", "-r", folder, "--force").exit_code == 0
