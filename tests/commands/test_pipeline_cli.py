"""The CLI end to end on the smoke config, through typer's CliRunner."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.methods.spec import KEY_A, KEY_B
from tests.conftest import SMOKE

runner = CliRunner()
FAST = ["--set", "pretrain.epochs=12", "--set", "finetune.epochs=12"]


def lora(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    result = lora("run", str(SMOKE), "--run-dir", str(run_dir), *FAST, "--json")
    assert result.exit_code == 0, result.output
    return run_dir, json.loads(result.stdout)


def test_run_writes_a_self_describing_folder(full_run):
    run_dir, report = full_run
    expected = {"config.yaml", "manifest.json", "metrics.jsonl", "base.safetensors", "merged.safetensors"}
    assert expected <= {p.name for p in run_dir.iterdir()}
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert set(manifest["versions"]) == {"python", "torch", "lora", "machine"} and manifest["seed"] == 0
    for stage in ("pretrain", "finetune", "merge"):
        rec = manifest["stages"][stage]
        assert rec["status"] == "complete"
        assert {"seconds", "final_loss", "baseline_loss"} <= set(rec)
        assert rec["final_loss"] == report["stages"][stage]["final_loss"]
    merge = manifest["stages"]["merge"]
    assert {"baseline_loss", "adapter_loss", "final_loss", "max_abs_diff"} <= set(merge)
    assert set(manifest["files"]) == {"base.safetensors", "adapter/adapter_model.safetensors",
                                      "adapter/adapter_config.json", "shift.safetensors", "merged.safetensors",
                                      "results.csv", "results.jsonl", "curves.csv"}
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines if x["stage"] == "finetune"] == [0, 5, 10, 12]
    assert {"stage", "epoch", "step", "loss"} <= set(lines[0])


def test_adapter_is_in_peft_layout(full_run):
    run_dir, _ = full_run
    tensors = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert set(tensors) == {KEY_A, KEY_B} == {"base_model.model.linear.lora_A.weight", "base_model.model.linear.lora_B.weight"}
    assert tensors[KEY_A].shape == (1, 33) and tensors[KEY_B].shape == (32, 1)
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 1 and config["lora_alpha"] == 1.0
    assert config["target_modules"] == ["linear"] and config["use_rslora"] is False and config["task_type"] is None
    base = load_file(run_dir / "base.safetensors")["weight"]
    merged = load_file(run_dir / "merged.safetensors")["weight"]
    assert base.shape == merged.shape == (32, 33)
    torch.testing.assert_close(merged, base + tensors[KEY_B] @ tensors[KEY_A])


def test_stage_by_stage_equals_run(full_run, runs_dir):
    _, report = full_run
    assert lora("pretrain", "-c", str(SMOKE), *FAST).exit_code == 0
    result = lora("finetune", "--rank", "1", "--json")
    assert result.exit_code == 0, result.output
    assert "Using the newest pipeline run folder" in result.stderr
    merged = lora("merge", "--json")
    assert merged.exit_code == 0
    stage_report = json.loads(merged.stdout)
    for key in ("baseline_loss", "adapter_loss", "final_loss", "max_abs_diff", "delta_mean", "delta_std"):
        assert stage_report[key] == report["stages"]["merge"][key], key
    assert json.loads(result.stdout)["history"] == report["stages"]["finetune"]["history"]


def test_tables_show_the_numbers(runs_dir):
    result = lora("run", str(SMOKE), *FAST)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("Epoch", "Loss", "Improvement", "baseline", "Full (32 x 33)", "1,056", "LoRA rank 1",
                 "93.84%", "16.25x", "MSE of the merged weight", "max |merged(x) - adapter(x)|", "ΔW mean"):
        assert text in out, text
    assert "Traceback" not in result.output


def test_runs_lists_status(runs_dir):
    assert lora("pretrain", "-c", str(SMOKE), "--epochs", "2").exit_code == 0
    listing = lora("runs", "--json")
    runs = json.loads(listing.stdout)["runs"]
    assert len(runs) == 1 and runs[0]["stages"]["pretrain"]["status"] == "complete"
    assert "finetune" not in runs[0]["stages"]
    assert runs[0]["columns"]["status"] == "pending" and runs[0]["columns"]["detail"] == "finetune not run yet"
    row = next(line for line in lora("runs").stdout.splitlines() if line.startswith("│"))
    assert "pending" in row and "finetune not run yet" in row


def test_finetune_again_needs_force_and_drops_the_merge(runs_dir):
    assert lora("run", str(SMOKE), "--epochs", "2").exit_code == 0
    again = lora("finetune", "--rank", "2", "--epochs", "2")
    assert again.exit_code == 1 and "already complete; pass --force" in again.stderr
    forced = lora("finetune", "--rank", "2", "--epochs", "2", "--force", "--json")
    assert forced.exit_code == 0 and json.loads(forced.stdout)["rank"] == 2
    run_dir = json.loads(lora("runs", "--json").stdout)["runs"][0]
    assert "merge" not in run_dir["stages"]
    merged = lora("merge", "--json")
    assert merged.exit_code == 0 and json.loads(merged.stdout)["status"] == "complete"


def test_every_command_has_help_naming_its_options():
    import typer

    assert lora("--version").stdout.strip().startswith("lora ")
    commands = typer.main.get_command(app).commands
    assert set(commands) >= {"run", "pretrain", "finetune", "merge", "approx", "plot", "runs", "validate"}
    for name, command in commands.items():
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and f"Usage: lora {name}" in result.stdout, name
        assert command.help.splitlines()[0].strip() in " ".join(result.stdout.split()), name
        for param in command.params:
            for flag in param.opts if param.param_type_name == "option" else []:
                assert flag in result.stdout, (name, flag)


def test_engines_give_the_same_run_and_are_recorded(runs_dir):
    args = ["run", str(SMOKE), "--set", "pretrain.epochs=6", "--set", "finetune.epochs=6", "--json", "--device", "cpu"]
    fast = json.loads(lora(*args, "--run-dir", "f").stdout)
    ref = json.loads(lora(*args, "--run-dir", "r", "--engine", "reference").stdout)
    for stage in ("pretrain", "finetune"):
        assert fast["stages"][stage]["engine"] == "fast" and ref["stages"][stage]["engine"] == "reference"
        assert fast["stages"][stage]["device"] == "cpu"
        for a, b in zip(fast["stages"][stage]["history"], ref["stages"][stage]["history"], strict=True):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    manifest = json.loads((runs_dir.parent / "f" / "manifest.json").read_text())
    assert manifest["stages"]["finetune"]["engine"] == "fast"


def test_dora_is_refused_by_the_fast_engine_and_auto_picks_one_that_trains_it(runs_dir):
    """--engine fast cannot train DoRA: one line, exit 2, no folder; the default (auto) trains
    the base on the fast engine, the DoRA adapter on the reference one, and says so."""
    args = ["run", str(SMOKE), "--set", "pretrain.epochs=4", "--set", "finetune.epochs=4", "--dora", "--rank", "2"]
    refused = lora(*args, "--run-dir", "no", "--engine", "fast")
    assert refused.exit_code == 2
    assert refused.stderr.strip() == "error: --engine fast: cannot train this adapter: it has no hand-written DoRA gradients; use --engine reference"
    assert not (runs_dir.parent / "no").exists()
    done = lora(*args, "--run-dir", "d", "--json")
    assert done.exit_code == 0, done.output
    assert "Training on the reference engine: the fast engine cannot train this adapter" in done.stderr
    stages = json.loads(done.stdout)["stages"]
    assert (stages["pretrain"]["engine"], stages["finetune"]["engine"]) == ("fast", "reference")
    assert stages["finetune"]["method"] == "dora" and stages["finetune"]["parameters"]["lora"] == 2 * (33 + 32) + 32
    assert stages["merge"]["final_loss"] == pytest.approx(stages["finetune"]["final_loss"], rel=1e-5)


def test_subspace_diagnostics_are_recorded_and_match_the_stored_tensors(full_run):
    """ΔW's error against the stored true shift, recomputed from the files; the smoke shift
    is rank 1, so the rank-1 adapter's direction lies within a degree of it."""
    run_dir, report = full_run
    manifest = json.loads((run_dir / "manifest.json").read_text())
    diag = report["stages"]["finetune"]["subspace"]
    assert manifest["stages"]["finetune"]["subspace"] == diag
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    scaling = manifest["stages"]["finetune"]["scaling"]
    delta = scaling * (adapter[KEY_B] @ adapter[KEY_A]).double()
    truth = load_file(run_dir / "shift.safetensors")["true_delta"].double()
    assert diag["shift"]["relative_error"] == pytest.approx((torch.linalg.norm(delta - truth) / torch.linalg.norm(truth)).item(), rel=1e-9)
    assert diag["rank"] == 1 and diag["shift"]["column_angles"][0] < 1.0 and diag["shift"]["row_angles"][0] < 1.0
    merged = report["stages"]["merge"]["subspace"]
    assert merged["shift"]["relative_error"] == pytest.approx(diag["shift"]["relative_error"], rel=1e-3)


@pytest.mark.parametrize("name", ["rank-vs-shift", "inits", "dora", "scaling"])
def test_each_question_config_runs_as_its_header_says(runs_dir, name):
    """The experiment configs run end to end (two epochs each) with their optimum and subspace."""
    config = SMOKE.parent / f"{name}.yaml"
    assert config.read_text().startswith(f"# Used by: lora run configs/{name}.yaml")
    result = lora("run", str(config), "--epochs", "2", "--set", "pretrain.log_every=1", "--set", "finetune.log_every=1", "--json")
    assert result.exit_code == 0, result.output
    finetune = json.loads(result.stdout)["stages"]["finetune"]
    assert finetune["optimal_loss"] > 0 and finetune["subspace"]["shift"]["relative_error"] > 0
