"""The fast engine is the reference math: same batches, same losses, same tensors.

Trajectories are compared while the loss is still falling: at a plateau a few ulps of
difference in a gradient move a loss of 1e-5 by more than 1e-5 of itself, which says
nothing about the arithmetic. Final tensors are compared after full convergence too.
"""

import pytest
import torch
from torch.testing import assert_close

from lora_cli.recipes import pipeline
from lora_cli.train.engines import Runtime
from lora_cli.train.sampler import epoch_batches, first_distinct
from tests.conftest import tiny_config


def _losses(history):
    return torch.tensor([p.loss for p in history.points], dtype=torch.float64)


def test_pretrain_fast_matches_reference():
    cfg = tiny_config(**{"pretrain.epochs": 12, "pretrain.log_every": 2})
    ref = pipeline.pretrain(cfg, runtime=Runtime("reference"))
    fast = pipeline.pretrain(cfg, runtime=Runtime("fast"))
    assert [p.epoch for p in fast.history.points] == [p.epoch for p in ref.history.points]
    assert_close(_losses(fast.history), _losses(ref.history), rtol=1e-5, atol=0)
    assert_close(fast.weight, ref.weight, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "rank, init, scaling, lr_ratio",
    [(1, "normal", "standard", 1.0), (4, "normal", "standard", 1.0), (2, "kaiming", "rslora", 1.0), (2, "gaussian", "standard", 8.0),
     (4, "orthogonal", "rslora", 1.0), (2, "pissa", "standard", 4.0), (3, "olora", "rslora", 1.0), (1, "normal", "standard", 16.0)],
)
def test_finetune_fast_matches_reference(rank, init, scaling, lr_ratio):
    """Every init, scaling rule and LoRA+ ratio: the hand-gradient engine follows autograd's trajectory."""
    sets = {"adapter.rank": rank, "adapter.init": init, "adapter.scaling": scaling, "adapter.lr_ratio": lr_ratio}
    sets |= {"finetune.epochs": 10, "finetune.log_every": 2}
    cfg = tiny_config(**sets)
    base = pipeline.pretrain(cfg, runtime=Runtime("reference")).weight
    ref = pipeline.finetune(cfg, base, runtime=Runtime("reference"))
    fast = pipeline.finetune(cfg, base, runtime=Runtime("fast"))
    # 1e-5 relative; a loss that has fallen 1000x below its start keeps float32 rounding of the start's size
    assert_close(_losses(fast.history), _losses(ref.history), rtol=1e-5, atol=1e-7 * ref.history.baseline)
    s = cfg.adapter.spec().scaling
    assert_close(s * fast.lora_B @ fast.lora_A, s * ref.lora_B @ ref.lora_A, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 4])
def test_converged_delta_w_matches_reference(rank):
    cfg = tiny_config(**{"adapter.rank": rank})
    base = pipeline.pretrain(cfg).weight
    ref, fast = (pipeline.finetune(cfg, base, runtime=Runtime(e)) for e in ("reference", "fast"))
    s = cfg.adapter.spec().scaling
    assert_close(s * fast.lora_B @ fast.lora_A, s * ref.lora_B @ ref.lora_A, rtol=0, atol=1e-5)
    assert fast.history.final == pytest.approx(ref.history.final, rel=1e-3)


@pytest.mark.parametrize("n, b", [(10000, 128), (100, 40), (512, 32)])
def test_batches_are_distinct_rows_in_range(n, b):
    batches = epoch_batches(n, b, 50, torch.Generator().manual_seed(1))
    assert batches.shape == (50, b)
    assert int(batches.min()) >= 0 and int(batches.max()) < n
    assert all(len(set(row.tolist())) == b for row in batches)
    again = epoch_batches(n, b, 50, torch.Generator().manual_seed(1))
    assert torch.equal(batches, again)


def test_batches_are_uniform():
    n, b, steps = 50, 10, 4000
    counts = torch.bincount(epoch_batches(n, b, steps, torch.Generator().manual_seed(2)).flatten(), minlength=n)
    expected = steps * b / n  # 800 draws of each row; sd ≈ sqrt(800·0.8) ≈ 25
    assert (counts - expected).abs().max().item() < 6 * 25


def test_first_distinct_keeps_draw_order_and_flags_short_rows():
    draws = torch.tensor([[3, 1, 3, 2, 1, 5], [1, 1, 1, 1, 2, 2], [7, 8, 9, 7, 8, 9]])
    values, complete = first_distinct(draws, 3)
    assert complete.tolist() == [True, False, True]
    assert values[0].tolist() == [3, 1, 2] and values[2].tolist() == [7, 8, 9]


def test_full_data_mse_is_accurate_at_the_blogs_size():
    from lora_cli.train.fast import mse_of

    g = torch.Generator().manual_seed(3)
    error = torch.randn(10000, 1000, generator=g) * 31.6  # the blog's base error on the shifted data
    truth = (error.double() ** 2).mean().item()
    assert mse_of(error.clone()) == pytest.approx(truth, rel=1e-5)
    wide = torch.zeros(10000, 2001)
    wide[:, 1001:] = error  # the strided view the fast finetune evaluates
    assert mse_of(wide[:, 1001:].clone()) == pytest.approx(truth, rel=1e-5)


def test_batch_rows_that_run_out_of_draws_fall_back_to_the_exact_method(monkeypatch):
    import lora_cli.train.sampler as train

    real = train.first_distinct

    def short_first_row(draws, k):
        values, complete = real(draws, k)
        complete[0] = False  # pretend row 0 drew too many repeats
        return values, complete

    monkeypatch.setattr(train, "first_distinct", short_first_row)
    batches = epoch_batches(1000, 16, 5, torch.Generator().manual_seed(4))
    assert batches.shape == (5, 16)
    assert all(len(set(row.tolist())) == 16 for row in batches)
    assert int(batches.max()) < 1000


def test_step_rows_are_each_steps_own_gather(monkeypatch):
    import lora_cli.train.fast as fast

    x, y = torch.randn(50, 3), torch.randn(50, 5)
    batches = epoch_batches(50, 4, 7, torch.Generator().manual_seed(2))
    monkeypatch.setattr(fast, "GATHER_ELEMENTS", 3 * 4 * 8)  # 3 steps a gather: 7 = 3 + 3 + 1
    rows = fast.StepRows([x, y], 4, 7, columns=[[1, 2], [5]])
    assert rows.chunk == 3
    steps = [tuple(v.clone() for v in views) for views in rows.epoch(batches)]
    assert len(steps) == 7
    for (x0, x1, yb), idx in zip(steps, batches):
        assert torch.equal(torch.cat([x0, x1], dim=1), x[idx]) and torch.equal(yb, y[idx])


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_gathering_many_steps_at_once_changes_no_bit(monkeypatch, stage):
    import lora_cli.train.fast as fast

    cfg = tiny_config(**{"finetune.epochs": 6, "pretrain.epochs": 6})
    base = pipeline.pretrain(cfg, runtime=Runtime("fast")).weight

    def trained() -> list[torch.Tensor]:
        if stage == "pretrain":
            return [pipeline.pretrain(cfg, runtime=Runtime("fast")).weight]
        result = pipeline.finetune(cfg, base, runtime=Runtime("fast"))
        return [result.lora_A, result.lora_B]

    many = trained()
    monkeypatch.setattr(fast, "GATHER_ELEMENTS", 1)  # one step a gather, as before StepRows
    for a, b in zip(many, trained()):
        assert torch.equal(a, b)


def test_lora_plus_gives_lora_b_peft_s_learning_rate():
    """Which parameters get lr·ratio is PEFT's rule (peft.optimizers.create_loraplus_optimizer)."""
    peft = pytest.importorskip("peft")
    from peft.optimizers import create_loraplus_optimizer

    from lora_cli.methods.spec import AdapterSpec
    from tests.conftest import engine_for, factors

    w, x, y = torch.randn(5, 7), torch.randn(20, 7), torch.randn(20, 5)
    spec = AdapterSpec(2, 1.0, lr_ratio=16.0)
    ours = engine_for("reference", w, spec, factors(torch.randn(2, 7), torch.zeros(5, 2)), x, y, 1e-3, 4)
    ours_lrs = {id(p): group["lr"] for group in ours.opt.param_groups for p in group["params"]}
    holder = torch.nn.Module()
    holder.linear = torch.nn.Linear(7, 5, bias=False)
    model = peft.get_peft_model(holder, peft.LoraConfig(r=2, target_modules=["linear"]))
    theirs = create_loraplus_optimizer(model, torch.optim.Adam, lr=1e-3, loraplus_lr_ratio=16.0)
    theirs_lrs = {name.split(".")[-3]: group["lr"] for group in theirs.param_groups for p in group["params"]
                  for name, q in model.named_parameters() if q is p}
    assert theirs_lrs == {"lora_A": 1e-3, "lora_B": 16e-3}
    assert ours_lrs == {id(ours.model.lora_A): theirs_lrs["lora_A"], id(ours.model.lora_B): theirs_lrs["lora_B"]}
