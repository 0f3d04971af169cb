"""The blog's stages on the smoke config: the adapter learns ΔW ≈ ones, merging changes nothing."""

import pytest
import torch
from torch.testing import assert_close

from lora_cli.recipes import data as drawn
from lora_cli.recipes import pipeline
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def stages():
    cfg = tiny_config()
    pre = pipeline.pretrain(cfg)
    fin = pipeline.finetune(cfg, pre.weight)
    return cfg, pre, fin, pipeline.merge(cfg, pre.weight, cfg.adapter.spec(), fin.adapter)


def test_pretrain_recovers_theta(stages):
    cfg, pre, _, _ = stages
    assert pre.history.final < 1e-3 * pre.history.baseline
    assert_close(pre.weight, drawn.thetas(cfg)[0].T, atol=1e-2, rtol=0)


def test_base_on_shifted_data_costs_about_d_in(stages):
    # x·(θ+1) − x·θ = x·1, a sum of d_in unit normals per output: MSE ≈ d_in · shift²
    cfg, _, fin, merged = stages
    assert fin.history.baseline == pytest.approx(cfg.data.d_in, rel=0.15)
    assert merged.base_loss == pytest.approx(fin.history.baseline, rel=1e-6)


def test_rank_one_adapter_learns_all_ones(stages):
    _, _, fin, merged = stages
    assert fin.history.final < 1e-3
    assert abs(merged.delta.mean().item() - 1.0) < 0.01 and merged.delta.std().item() < 0.01
    assert_close(merged.delta, torch.ones_like(merged.delta), atol=0.01, rtol=0)


def test_merge_matches_the_adapter(stages):
    _, pre, fin, merged = stages
    assert merged.merged_loss == pytest.approx(merged.adapter_loss, rel=1e-3, abs=1e-7)
    assert merged.max_abs_diff < 1e-4
    assert_close(merged.merged, pre.weight + fin.lora_B @ fin.lora_A)


def test_same_seed_same_tensors():
    cfg = tiny_config(**{"pretrain.epochs": 2, "finetune.epochs": 2})
    a, b = pipeline.pretrain(cfg), pipeline.pretrain(cfg)
    assert torch.equal(a.weight, b.weight)
    fa, fb = pipeline.finetune(cfg, a.weight), pipeline.finetune(cfg, b.weight)
    assert torch.equal(fa.lora_A, fb.lora_A) and torch.equal(fa.lora_B, fb.lora_B)


def test_finetune_seed_varies_the_adapter_over_the_same_base_and_data():
    cfg = tiny_config(**{"pretrain.epochs": 2, "finetune.epochs": 2})
    base = pipeline.pretrain(cfg).weight
    default = pipeline.finetune(cfg, base)
    same = pipeline.finetune(tiny_config(**{"pretrain.epochs": 2, "finetune.epochs": 2, "finetune.seed": 0}), base)
    other = pipeline.finetune(tiny_config(**{"pretrain.epochs": 2, "finetune.epochs": 2, "finetune.seed": 5}), base)
    assert torch.equal(same.lora_A, default.lora_A), "unset finetune.seed means the top-level seed"
    assert not torch.equal(other.lora_A, default.lora_A)
    assert other.history.baseline == default.history.baseline, "same base, same data: same loss at epoch 0"
    assert torch.equal(other.true_delta, default.true_delta)


def test_merge_applies_the_scaling():
    """rank 2, alpha 3: scaling 1.5, so a merge that dropped it could not pass (the smoke config's is 1)."""
    cfg = tiny_config(**{"adapter.rank": 2, "adapter.alpha": 3.0, "pretrain.epochs": 3, "finetune.epochs": 3})
    pre = pipeline.pretrain(cfg)
    fin = pipeline.finetune(cfg, pre.weight)
    merged = pipeline.merge(cfg, pre.weight, cfg.adapter.spec(), fin.adapter)
    assert cfg.adapter.spec().scaling == 1.5
    assert_close(merged.merged, pre.weight + 1.5 * fin.lora_B @ fin.lora_A)
    assert merged.max_abs_diff < 1e-4 and merged.merged_loss == pytest.approx(fin.history.final, rel=1e-3)
