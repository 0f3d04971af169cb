"""Methods end to end: full fine-tuning and LoRA-FA through run, finetune, merge and a sweep
beside LoRA and DoRA; old configs and run folders that said `dora` read as the DoRA method."""

import csv
import json

import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lora_cli.cli import app
from lora_cli.config.loading import load_config
from lora_cli.core.rng import generator
from lora_cli.methods.registry import METHODS
from lora_cli.methods.spec import KEY_A
from lora_cli.recipes import pipeline
from lora_cli.stages import results
from tests.conftest import SMOKE

runner = CliRunner()
SHORT = ["--set", "pretrain.epochs=6", "--set", "finetune.epochs=6"]


def lora(*args):
    return runner.invoke(app, [str(a) for a in args])


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def test_a_sweep_carries_lora_lora_fa_dora_and_full_side_by_side(tmp_path):
    folder = tmp_path / "s"
    done = lora("sweep", SMOKE, "--grid", "adapter.method=lora,lora_fa,dora,full", "--grid", "adapter.rank=2", *SHORT, "--run-dir", folder)
    assert done.exit_code == 0, done.output
    assert "again" not in done.stderr  # a fresh sweep has no damaged base to pretrain again
    rows = list(csv.DictReader((folder / "results.csv").open()))
    assert [(r["method"], r["status"]) for r in rows] == [(m, "complete") for m in ("lora", "lora_fa", "dora", "full")]
    engines = {r["method"]: r["engine"] for r in rows}
    assert engines == {"lora": "batched", "lora_fa": "batched", "dora": "reference", "full": "fast"}
    for row in rows:
        assert float(row["final_loss"]) >= float(row["optimal_loss"]) * (1 - 1e-6) or row["method"] == "dora"
        assert row["method"] in done.stdout.split("Sweep results")[1]
    assert {p.name for p in folder.glob("*.png")} == {"sweep_rank.png", "sweep_curves.png", "sweep_heatmap.png"}
    fa = folder / "trials" / rows[1]["trial"]
    cfg = load_config(fa / "config.yaml")
    start, _ = METHODS["lora_fa"].start(load_file(fa / "base.safetensors")["weight"], cfg.adapter.spec(),
                                        generator(pipeline.adapter_seed(cfg), "init_adapter"))
    assert torch.equal(load_file(fa / "adapter" / "adapter_model.safetensors")[KEY_A], start[KEY_A])  # trained on the batched engine, A untouched
    full = folder / "trials" / rows[3]["trial"]
    assert (full / "finetuned.safetensors").is_file() and not (full / "adapter").exists()


def test_full_fine_tuning_runs_merges_and_says_it_has_no_adapter(tmp_path):
    run_dir = tmp_path / "r"
    done = lora("run", SMOKE, "--method", "full", *SHORT, "--run-dir", run_dir, "--json")
    assert done.exit_code == 0, done.output
    stages = json.loads(done.stdout)["stages"]
    finetune = stages["finetune"]
    assert finetune["method"] == "full" and finetune["parameters"]["lora"] == 33 * 32
    assert finetune["final_loss"] >= finetune["optimal_loss"] * (1 - 1e-6)
    assert finetune["population_optimal_loss"] == 0.0  # noiseless: W' = θ2ᵀ is reachable
    trained = load_file(run_dir / "finetuned.safetensors")["weight"]
    assert torch.equal(load_file(run_dir / "merged.safetensors")["weight"], trained)
    assert stages["merge"]["max_abs_diff"] == 0.0 and not (run_dir / "adapter").exists()
    again = lora("finetune", "--run-dir", run_dir, "--method", "lora_fa", "--rank", "2", "--force")
    assert again.exit_code == 0, again.output
    assert "LoRA-FA rank 2 (32 x 2)" in again.stdout and "s·B·A₀ with lora_A frozen" in again.stdout
    assert not (run_dir / "finetuned.safetensors").exists()
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert lora("merge", "--run-dir", run_dir).exit_code == 0
    assert lora("finetune", "--run-dir", run_dir, "--method", "full", "--force").exit_code == 0
    assert not (run_dir / "adapter").exists()  # no empty adapter folder left to suggest there is one


def test_old_configs_and_run_folders_that_said_dora_read_as_the_dora_method(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(SMOKE.read_text().replace("  init: normal\n", "  init: normal\n  dora: true\n"))
    assert load_config(old).adapter.method == "dora"
    assert lora("validate", old).exit_code == 0
    run_dir = tmp_path / "r"
    assert lora("run", old, *SHORT, "--run-dir", run_dir).exit_code == 0
    # the folder as lora wrote it before methods: `dora: true` in the record and config, no method
    manifest = _manifest(run_dir)
    entry = manifest["stages"]["finetune"]
    entry.pop("method")
    entry["dora"] = True
    entry["parameters"].pop("method")
    for stage in ("pretrain", "finetune"):
        manifest["stages"][stage]["parameters"].pop("method", None)
    for stage, rec in manifest["stages"].items():
        rec["record_sha256"] = results.entry_digest({k: v for k, v in rec.items() if k not in ("record_sha256", "metrics_sha256", "started")})
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text().replace("method: dora", "dora: true"))
    resumed = lora("run", "--resume", "--run-dir", run_dir, "--json")
    assert resumed.exit_code == 0, resumed.output
    assert "again" not in resumed.stderr  # every stage kept: the old record is intact
    finetune = json.loads(resumed.stdout)["stages"]["finetune"]
    assert finetune["kept"] and finetune["method"] == "dora" and finetune["parameters"]["method"] == "dora"
    from rich.console import Console

    from lora_cli.stages.kinds import open_run
    from lora_cli.show.tables import stage_tables

    console = Console(width=200, record=True)
    for part in stage_tables(results.load(open_run(run_dir, lock=None), "finetune"), (33, 32)):
        console.print(part)
    text = console.export_text()
    assert "rank-1 adapter (alpha 1, DoRA)" in text and "DoRA rank 1 (1 x (33 + 32) + 32 magnitudes)" in text
