"""Every expected failure is one line on stderr with the right exit code, never a traceback."""

import json

from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE

runner = CliRunner()


def _fails(args, code, *fragments):
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    # the only other line allowed is the note naming the run folder that was picked
    assert all(line.startswith("Using the newest pipeline run folder") for line in lines if line not in errors)
    for fragment in fragments:
        assert fragment in errors[0]
    assert "Traceback" not in result.output and result.stdout == ""
    return errors[0]


def test_missing_config_file(runs_dir):
    _fails(["run", "nope.yaml"], 2, "nope.yaml: no such file")


def test_malformed_yaml(runs_dir):
    (runs_dir.parent / "bad.yaml").write_text("data: [1, 2\n")
    _fails(["validate", "bad.yaml"], 2, "bad.yaml: not valid YAML (line")


def test_unknown_key(runs_dir):
    (runs_dir.parent / "bad.yaml").write_text("finetune:\n  rnak: 2\n")
    _fails(["run", "bad.yaml"], 2, "bad.yaml: unknown key finetune.rnak; did you mean adapter.rank?")


def test_rank_zero_and_too_large(runs_dir):
    _fails(["run", str(SMOKE), "--rank", "0"], 2, "--rank: adapter.rank = 0 is out of range: must be ≥ 1")
    _fails(["run", str(SMOKE), "--rank", "40"], 2, "adapter.rank = 40", "= 32")


def test_bad_option_values_are_usage_errors(runs_dir):
    _fails(["finetune", "--rank", "abc"], 2, "--rank: adapter.rank = 'abc' is not allowed: must be a whole number")
    _fails(["finetune", "--json", "--bogus"], 2, "No such option", "lora finetune --help")
    _fails(["run", str(SMOKE), "--set", "adapter.rank"], 2, "expected section.key=value")
    _fails(["frobnicate"], 2, "No such command")


def test_finetune_before_pretrain(runs_dir):
    _fails(["finetune", "--rank", "1"], 1, "no run folders", "lora pretrain")
    empty = runs_dir / "x"
    empty.mkdir(parents=True)
    _fails(["finetune", "--run-dir", str(empty)], 1, "not a lora run folder")


def test_merge_before_finetune(runs_dir):
    assert runner.invoke(app, ["pretrain", "-c", str(SMOKE), "--epochs", "1"]).exit_code == 0
    _fails(["merge"], 1, "the finetune stage is not run", "lora finetune --run-dir")


def test_finetune_cannot_change_what_pretraining_fixed(runs_dir):
    assert runner.invoke(app, ["pretrain", "-c", str(SMOKE), "--epochs", "1"]).exit_code == 0
    _fails(["finetune", "--set", "data.d_in=8"], 2, "data.d_in was fixed when", "lora run CONFIG --set data.d_in=")


def test_validate_prints_every_problem(runs_dir):
    (runs_dir.parent / "bad.yaml").write_text("data:\n  n: 0\nfinetune:\n  lr: -1\n")
    result = runner.invoke(app, ["validate", "bad.yaml"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 2


def test_validate_prints_every_resolved_value():
    from lora_cli.config.loading import describe_schema, load_config

    cfg = load_config(SMOKE).to_dict()
    result = runner.invoke(app, ["validate", str(SMOKE)], env={"COLUMNS": "250"})
    assert result.exit_code == 0 and f"{SMOKE}: valid" in result.stderr
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in result.stdout.splitlines() if line.count("│") == 4}
    for key, *_ in describe_schema():
        value = cfg
        for part in key.split("."):  # sections nest: data.covariance.kind
            value = value[part]
        assert rows[key] == str(value), key
    as_json = runner.invoke(app, ["validate", str(SMOKE), "--json"])
    assert as_json.exit_code == 0 and json.loads(as_json.stdout) == cfg


def test_bad_engine_and_unavailable_device(runs_dir):
    _fails(["run", str(SMOKE), "--engine", "turbo"], 2, "Invalid value for '--engine': 'turbo' is not one of 'auto', 'fast', 'reference'")
    _fails(["run", str(SMOKE), "--device", "tpu"], 2, "Invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'")
    for command in (["pretrain"], ["finetune"]):
        _fails([*command, "--engine", "nosuch"], 2, "'nosuch' is not one of 'auto', 'fast', 'reference'")
    import torch

    if not torch.cuda.is_available():
        _fails(["run", str(SMOKE), "--device", "cuda"], 2, "--device cuda: no usable CUDA GPU here")
    assert not runs_dir.exists(), "nothing is written when the runtime options are wrong"
