"""Typed stage records: what a stage returns is what its run folder holds, field for field,
and the manifest entry, metrics lines and --json come from the one record."""

import dataclasses
import hashlib
import json

import pytest

from lora_cli.stages import results
from lora_cli.stages.kinds import create_run
from lora_cli.stages.pipeline import finetune_stage, merge_stage, pretrain_stage
from lora_cli.store.files import dumps
from lora_cli.train.engines import Runtime
from tests.conftest import tiny_config


def test_each_stage_record_is_rebuilt_exactly_from_its_run_folder(tmp_path):
    cfg = tiny_config(**{"pretrain.epochs": 4, "finetune.epochs": 4, "pretrain.log_every": 2, "finetune.log_every": 2})
    run = create_run(cfg, tmp_path / "r", tmp_path)
    made = [pretrain_stage(run, cfg, Runtime()), finetune_stage(run, cfg, Runtime()), merge_stage(run)]
    for record in made:
        back = results.load(run, record.stage)
        assert type(back) is type(record) and back == record, record.stage
        # the manifest holds the entry (plus when it started); --json adds where and the history
        stored = run.stage(record.stage)
        assert {k: stored[k] for k in record.entry()} == json.loads(dumps(record.entry()))
        # plus when it started, and for a training stage the digest of its metrics rows
        digest = {"metrics_sha256"} if "history" in record.to_json() else set()
        assert set(stored) - set(record.entry()) == {"started", "record_sha256"} | digest
        canonical = json.dumps(json.loads(dumps(record.entry())), sort_keys=True).encode()
        assert stored["record_sha256"] == hashlib.sha256(canonical).hexdigest()
        if digest:
            rows = "".join(dumps(row) + "\n" for row in record.history).encode()
            assert stored["metrics_sha256"] == hashlib.sha256(rows).hexdigest()
        extra = set(record.to_json()) - set(record.entry())
        assert extra == ({"stage", "run_dir", "history"} if "history" in record.to_json() else {"stage", "run_dir"})
    pretrain, finetune, merge = made
    assert [r["loss"] for r in run.metrics() if r["stage"] == "pretrain"] == [p["loss"] for p in pretrain.history]
    assert finetune.base_sha256 == run.manifest()["files"]["base.safetensors"]["sha256"]
    assert merge.baseline_loss == pytest.approx(finetune.baseline_loss, rel=1e-6)  # the base alone on the shifted data, both ways
    kept = results.load(run, "merge", kept=True)
    assert kept.to_json()["kept"] is True and "kept" not in merge.to_json()
    assert dataclasses.replace(kept, kept=False) == merge


def test_the_optimum_sits_beside_each_training_result_unless_turned_off(tmp_path):
    cfg = tiny_config(**{"pretrain.epochs": 3, "finetune.epochs": 3, "finetune.optimum": False})
    run = create_run(cfg, tmp_path / "r", tmp_path)
    pretrain, finetune = pretrain_stage(run, cfg, Runtime()), finetune_stage(run, cfg, Runtime())
    assert pretrain.optimal_loss is not None and pretrain.gap == pretrain.final_loss - pretrain.optimal_loss
    assert run.stage("pretrain")["optimal_loss"] == pretrain.optimal_loss
    assert finetune.optimal_loss is None and finetune.population_optimal_loss is None
    assert run.stage("finetune")["optimal_loss"] is None
