"""`lora merge --adapter DIR`: an adapter folder PEFT itself saved, merged onto a run's base
and checked against PEFT's own merge_and_unload."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from tests.conftest import SMOKE, linear_holder

peft = pytest.importorskip("peft")
runner = CliRunner()


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("import") / "run"
    result = runner.invoke(app, ["pretrain", "-c", str(SMOKE), "--epochs", "6", "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    return run_dir, load_file(run_dir / "base.safetensors")["weight"]


def _peft_adapter(folder, weight, **config):
    """A PEFT model on `weight` with a non-trivial adapter, saved by PEFT to `folder`."""
    model = peft.get_peft_model(linear_holder(weight), peft.LoraConfig(target_modules=["linear"], **config))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn(param.shape, generator=torch.Generator().manual_seed(len(name))) * 0.1)
    model.save_pretrained(str(folder))
    return model


@pytest.mark.parametrize("config", [{"r": 3, "lora_alpha": 6}, {"r": 2, "lora_alpha": 4, "use_rslora": True, "use_dora": True}])
def test_a_peft_saved_adapter_merges_as_peft_merges_it(pretrained, tmp_path, config):
    run_dir, weight = pretrained
    model = _peft_adapter(tmp_path / "peft", weight, **config)
    result = runner.invoke(app, ["merge", "--run-dir", str(run_dir), "--adapter", str(tmp_path / "peft"), "--force", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    merged = load_file(run_dir / "merged.safetensors")["weight"]
    with torch.no_grad():
        torch.testing.assert_close(merged, model.merge_and_unload().linear.weight, rtol=1e-5, atol=1e-6)
    source = record["adapter_source"]
    assert (source["rank"], source["method"]) == (config["r"], "dora" if config.get("use_dora") else "lora")
    assert source["scaling_rule"] == ("rslora" if config.get("use_rslora") else "standard")
    assert record["subspace"]["rank"] <= config["r"] and record["subspace"]["shift"]["relative_error"] > 0
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["stages"]["merge"]["adapter_source"] == source


def test_an_adapter_for_another_shape_or_a_residual_base_is_refused_in_one_line(pretrained, tmp_path):
    run_dir, weight = pretrained
    _peft_adapter(tmp_path / "wide", torch.zeros(weight.shape[0], weight.shape[1] + 1), r=2)
    _peft_adapter(tmp_path / "pissa", weight, r=2, init_lora_weights="pissa")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "adapter_config.json").write_text("{not json")
    (tmp_path / "broken" / "adapter_model.safetensors").write_bytes(b"")
    cases = {
        "wide": "lora_A.weight has shape (2, 34), not (2, 33)",
        "broken": "adapter_config.json: unreadable",
        "pissa": "init_lora_weights = 'pissa': such an adapter applies to PEFT's residual base",
        "absent": "no such folder",
    }
    for name, fragment in cases.items():
        result = runner.invoke(app, ["merge", "--run-dir", str(run_dir), "--adapter", str(tmp_path / name), "--force"])
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
        assert "rm -r" not in lines[0], "the user's adapter folder is not a damaged run folder"
