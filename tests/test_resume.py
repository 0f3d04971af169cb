"""Checkpoints carry everything: resuming from one ends bit-identical to never stopping."""

import pytest
import torch

from lora_cli.recipes import pipeline
from lora_cli.train.engines import Runtime
from lora_cli.runtime.resources import ResourceError, check_memory, stage_bytes
from tests.conftest import tiny_config

SETS = {"pretrain.epochs": 9, "pretrain.checkpoint_every": 3, "finetune.epochs": 9, "finetune.checkpoint_every": 4}


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_resumed_pretrain_is_bit_identical(engine):
    cfg = tiny_config(**SETS)
    states = []
    full = pipeline.pretrain(cfg, runtime=Runtime(engine), on_checkpoint=states.append)
    assert [s.epoch for s in states] == [3, 6, 9] and all(s.engine == engine for s in states)  # 9: the last
    for state in states:  # from the last: nothing left to train, the same result
        resumed = pipeline.pretrain(cfg, runtime=Runtime(engine), resume=state)
        assert torch.equal(resumed.weight, full.weight)
        assert resumed.history.points == full.history.points


@pytest.mark.parametrize("engine, rank, method", [("fast", 1, "lora"), ("fast", 4, "lora"), ("reference", 2, "lora"), ("auto", 2, "dora"),
                                                 ("fast", 2, "lora_fa"), ("reference", 2, "lora_fa"), ("fast", 1, "full"), ("reference", 1, "full")])
def test_resumed_finetune_is_bit_identical(engine, rank, method):
    """Every method, its checkpoints holding each logged point's metrics (the test loss) too."""
    cfg = tiny_config(**SETS, **{"adapter.rank": rank, "adapter.method": method, "adapter.lr_ratio": 4.0 if method != "full" else 1.0})
    base = pipeline.pretrain(cfg).weight
    states = []
    full = pipeline.finetune(cfg, base, runtime=Runtime(engine), on_checkpoint=states.append)
    assert [s.epoch for s in states] == [4, 8, 9]
    for state in (states[0], states[-1]):
        resumed = pipeline.finetune(cfg, base, runtime=Runtime(engine), resume=state)
        assert resumed.adapter.keys() == full.adapter.keys()
        assert all(torch.equal(resumed.adapter[key], full.adapter[key]) for key in full.adapter)
        assert resumed.history.points == full.history.points
    assert "test_loss" in full.history.points[-1].metrics


def test_no_checkpoints_when_switched_off():
    states = []
    pipeline.pretrain(tiny_config(**{"pretrain.epochs": 4, "pretrain.checkpoint_every": 0}), on_checkpoint=states.append)
    assert states == []


def test_memory_estimate_counts_the_blog_data():
    cfg = tiny_config(**{"data.n": 10000, "data.d_in": 1001, "data.d_out": 1000})
    parts = stage_bytes(cfg, "pretrain")
    # θ (1001·1000) + X (10000·1001) + y (10000·1000) floats, by hand
    assert parts["data (θ, X, y)"] == 4 * (1001 * 1000 + 10000 * 1001 + 10000 * 1000)
    assert check_memory(cfg, "pretrain", available=10**12) == sum(parts.values())
    with pytest.raises(ResourceError, match=r"pretrain needs about 1[34]\d\.\d MiB .* but only 100\.0 MiB is available"):
        check_memory(cfg, "pretrain", available=100 * 2**20)
