"""The batched engine is the fast engine K times over: each lane's trajectory and tensors are
those of the same trial trained alone, whatever its rank, scaling, init and learning rates."""

import pytest
import torch
from torch.testing import assert_close

from lora_cli.core import subspace
from lora_cli.recipes import pipeline, sweep
from lora_cli.train import batched
from lora_cli.train.engines import Runtime
from tests.conftest import tiny_config

# rank, alpha, init, scaling, lr_ratio, lr: mixed ranks (two lanes of rank 2 share a bucket).
# Rates low enough that every loss is still falling at the end: at a plateau a few ulps of
# difference in a gradient move a loss of 1e-5 by more than 1e-5 of itself (tests/test_fast.py).
TRIALS = [
    (1, 1.0, "normal", "standard", 1.0, 1e-3),
    (2, 4.0, "kaiming", "standard", 1.0, 2e-3),
    (4, 2.0, "gaussian", "rslora", 1.0, 1e-3),
    (2, 1.0, "orthogonal", "rslora", 8.0, 5e-4),
    (3, 8.0, "normal", "standard", 1.0, 2e-3),
]


def _configs(trials=TRIALS, epochs=12, optimum=True):
    keys = ("adapter.rank", "adapter.alpha", "adapter.init", "adapter.scaling", "adapter.lr_ratio", "finetune.lr")
    sets = {"finetune.epochs": epochs, "finetune.log_every": 2, "finetune.optimum": optimum}
    return [tiny_config(**dict(zip(keys, t)), **sets) for t in trials]


def _losses(history):
    return torch.tensor([p.loss for p in history.points], dtype=torch.float64)


@pytest.fixture(scope="module")
def base():
    return pipeline.pretrain(_configs()[0]).weight


@pytest.mark.parametrize("evaluation", ["moments", "direct"])
def test_each_lane_equals_its_trial_alone(base, evaluation, monkeypatch):
    monkeypatch.setattr(batched, "MOMENTS_PER_ELEMENT", 0.0 if evaluation == "moments" else float("inf"))
    cfgs = _configs(optimum=evaluation == "moments")  # trials whose optima need the moments always use them
    together = sweep.finetune_group(cfgs, base)
    for cfg, lane in zip(cfgs, together):
        alone = pipeline.finetune(cfg, base, runtime=Runtime("fast"))
        assert [p.epoch for p in lane.history.points] == [p.epoch for p in alone.history.points]
        assert_close(_losses(lane.history), _losses(alone.history), rtol=1e-5, atol=0)
        assert_close(lane.lora_A, alone.lora_A, rtol=0, atol=1e-5)
        assert_close(lane.lora_B, alone.lora_B, rtol=0, atol=1e-5)
        assert lane.divergence is None


def test_a_diverging_lane_leaves_the_others_alone(base):
    trials = [TRIALS[0], (2, 4.0, "kaiming", "standard", 1.0, 1e6), TRIALS[2]]
    cfgs = _configs(trials)
    together = sweep.finetune_group(cfgs, base)
    assert together[1].divergence is not None
    for i in (0, 2):
        alone = pipeline.finetune(cfgs[i], base, runtime=Runtime("fast"))
        assert together[i].divergence is None
        assert_close(_losses(together[i].history), _losses(alone.history), rtol=1e-5, atol=0)
        assert_close(together[i].lora_B, alone.lora_B, rtol=0, atol=1e-5)


def test_group_optima_equal_each_trials_own(base):
    cfgs = _configs(epochs=1)
    sets = {"adapter.rank": 3, "adapter.method": "lora_fa", "finetune.epochs": 1, "finetune.log_every": 2}
    cfgs.append(tiny_config(**sets))  # a floor of its own (least squares in A₀'s rows), from the same moments
    assert len({sweep.group_key(cfg) for cfg in cfgs}) == 1
    for cfg, shared in zip(cfgs, sweep.group_optima(cfgs, base)):
        own = pipeline.finetune_optimum(cfg, base)
        assert shared.loss == pytest.approx(own.loss, rel=1e-12)
        assert shared.population == pytest.approx(own.population, rel=1e-12)


def test_factored_diagnostics_equal_the_plain_ones(base):
    """ΔW's SVD from QRs of s·B and A against torch's SVD of the float64 product."""
    cfg = _configs(epochs=40)[2]
    result = pipeline.finetune(cfg, base)
    s = cfg.adapter.spec().scaling
    left, right = s * result.lora_B.double(), result.lora_A.double()
    plain = pipeline.diagnostics(cfg, base, left @ right, cfg.adapter.rank)
    shift, target, _ = sweep.group_targets(cfg, base)
    shared = subspace.diagnose(left @ right, shift, target, cfg.adapter.rank, factors=(left, right))
    assert shared.rank == plain.rank == 4
    assert_close(torch.tensor(shared.singular_values), torch.tensor(plain.singular_values[:4]), rtol=1e-9, atol=0)
    assert shared.stable_rank == pytest.approx(plain.stable_rank, rel=1e-9)
    for ours, theirs in ((shared.shift, plain.shift), (shared.target, plain.target)):
        assert ours.relative_error == pytest.approx(theirs.relative_error, rel=1e-9)
        assert ours.energy_captured == pytest.approx(theirs.energy_captured, rel=1e-9)
        assert_close(torch.tensor(ours.column_angles), torch.tensor(theirs.column_angles), rtol=0, atol=1e-6)
        assert_close(torch.tensor(ours.row_angles), torch.tensor(theirs.row_angles), rtol=0, atol=1e-6)


def test_plan_batches_what_it_can_and_says_why_not():
    cfgs = _configs(epochs=2) + [tiny_config(**{"adapter.init": "pissa"}), tiny_config(**{"adapter.dora": True})]
    cfgs.append(tiny_config(**{"finetune.seed": 7}))  # another batch order: a group of its own
    groups = sweep.plan(cfgs)
    assert [(g.engine, g.trials) for g in groups[:2]] == [("batched", (0, 1, 2, 3, 4)), ("batched", (7,))]
    assert [(g.engine, g.trials) for g in groups[2:]] == [("fast", (5,)), ("reference", (6,))]
    assert "residual" in groups[2].why and "DoRA" in groups[3].why
    assert all(g.engine == "fast" and len(g.trials) == 1 for g in sweep.plan(cfgs[:3], "fast"))


def test_a_gradient_init_lane_equals_its_trial_alone(base):
    """LoRA-One keeps W frozen, so it trains as a lane; its start reads the group's shared moments."""
    cfgs = _configs([(2, 4.0, "lora_one", "standard", 1.0, 1e-3), (1, 1.0, "normal", "standard", 1.0, 1e-3)], epochs=4)
    assert len(sweep.plan(cfgs)) == 1  # one batched group
    together = sweep.finetune_group(cfgs, base)
    alone = pipeline.finetune(cfgs[0], base, runtime=Runtime("fast"))
    assert_close(together[0].initial["base_model.model.linear.lora_A.weight"],
                 alone.initial["base_model.model.linear.lora_A.weight"], rtol=0, atol=1e-6)
    assert_close(_losses(together[0].history), _losses(alone.history), rtol=1e-5, atol=0)
