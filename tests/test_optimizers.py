"""Every optimiser and schedule on every engine that declares them is torch.optim's, step for step.

The reference here is a plain autograd loop over the same batches with torch.optim's own
class and torch.optim.lr_scheduler's own schedulers (LinearLR, CosineAnnealingLR,
SequentialLR), stepped once per step; nothing of train/optimizers.py is used to compute it.
"""

import pytest
import torch
from torch.testing import assert_close

from lora_cli.methods.spec import KEY_A, KEY_B, KEY_W, AdapterSpec
from lora_cli.train.batched import BatchedFinetune, Lane
from lora_cli.train.engines import Task, build
from lora_cli.train.loop import Schedule, train
from lora_cli.train.optimizers import FlatOptimizer, Optim
from lora_cli.train.sampler import epoch_batches

N, D_IN, D_OUT, B, EPOCHS = 64, 7, 5, 8, 6
STEPS = N // B
TOTAL = EPOCHS * STEPS
CASES = {
    "adam+L2, warm-up then cosine": Optim("adam", 0.1, schedule="cosine", warmup=6, total=TOTAL),
    "adamw, warm-up": Optim("adamw", 0.05, schedule="warmup", warmup=9, total=TOTAL),
    "adamw, constant": Optim("adamw", 0.2, total=TOTAL),
    "sgd momentum+L2, cosine": Optim("sgd", 0.01, 0.9, "cosine", 0, TOTAL),
    "sgd, no momentum, warm-up": Optim("sgd", 0.0, 0.0, "warmup", 4, TOTAL),
}


def torch_optimizer(params, lr, optim):
    if optim.name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optim.name](params, lr=lr, weight_decay=optim.weight_decay)


def torch_scheduler(opt, optim):
    """torch's own schedulers for `optim`'s schedule (None: constant)."""
    from torch.optim import lr_scheduler as S

    if optim.schedule == "constant":
        return None
    warm = S.LinearLR(opt, start_factor=1 / optim.warmup, end_factor=1.0, total_iters=optim.warmup - 1) if optim.warmup else None
    if optim.schedule == "warmup":
        return warm
    cosine = S.CosineAnnealingLR(opt, T_max=optim.total - optim.warmup)
    return S.SequentialLR(opt, [warm, cosine], milestones=[optim.warmup]) if warm else cosine


@pytest.mark.parametrize("schedule, warmup", [("warmup", 5), ("cosine", 5), ("cosine", 0), ("warmup", 2)])
def test_schedule_factors_are_torch_schedulers(schedule, warmup):
    optim = Optim(schedule=schedule, warmup=warmup, total=40)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch_scheduler(opt, optim)
    for step in range(40):
        assert optim.factor(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15), step
        opt.step()
        scheduler.step()


@pytest.mark.parametrize("case", list(CASES))
def test_flat_optimizer_is_torch_optim_with_two_learning_rates(case):
    """One flat buffer, a tail at its own rate (LoRA+), against torch.optim with two groups and torch's scheduler."""
    optim = CASES[case]
    g = torch.Generator().manual_seed(0)
    flat, grad = torch.randn(10, generator=g), torch.empty(10)
    a, b = flat[:6].clone().requires_grad_(), flat[6:].clone().requires_grad_()
    ours = FlatOptimizer(flat, grad, 1e-2, optim, lrs=[(6, 5e-2)])
    theirs = torch_optimizer([{"params": [a]}, {"params": [b], "lr": 5e-2}], 1e-2, optim)
    scheduler = torch_scheduler(theirs, optim)
    for _ in range(TOTAL):
        step_grad = torch.randn(10, generator=g)
        grad.copy_(step_grad)
        ours.step()
        a.grad, b.grad = step_grad[:6].clone(), step_grad[6:].clone()
        theirs.step()
        if scheduler:
            scheduler.step()
        assert_close(flat, torch.cat([a.detach(), b.detach()]), rtol=1e-6, atol=1e-7)


def _problem():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(N, D_IN, generator=g), torch.randn(D_OUT, D_IN, generator=g)
    y = x @ (w + 0.3 * torch.randn(D_OUT, D_IN, generator=g)).T
    a0, b0 = 0.3 * torch.randn(2, D_IN, generator=g), 0.1 * torch.randn(D_OUT, 2, generator=g)
    return w, x, y, a0, b0


def _torch_loop(params, groups, forward, x, y, optim, lr):
    """Autograd over the loop's batches with torch.optim and torch's schedulers: full-data loss after each epoch."""
    opt = torch_optimizer(groups, lr, optim)
    scheduler = torch_scheduler(opt, optim)
    batches, losses = torch.Generator().manual_seed(7), []
    for _ in range(EPOCHS):
        for idx in epoch_batches(N, B, STEPS, batches):
            loss = torch.nn.functional.mse_loss(forward(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if scheduler:
                scheduler.step()
        with torch.no_grad():
            losses.append(torch.nn.functional.mse_loss(forward(x), y).item())
    return [p.detach() for p in params], losses


def _ours(engine):
    fit = train(engine, Schedule(EPOCHS, B, 1), torch.Generator().manual_seed(7))
    return [p.loss for p in fit.history.points[1:]]


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("case", list(CASES))
def test_full_training_is_torch_optim(engine, case):
    """Pretraining and full fine-tuning (every weight trained)."""
    optim, (w, x, y, _, _) = CASES[case], _problem()
    param = torch.nn.Parameter(w.clone())
    (expected,), losses = _torch_loop([param], [param], lambda xb: xb @ param.T, x, y, optim, 3e-2)
    ours = build(engine, "full", Task((KEY_W,), w, None, {KEY_W: w}, x, y, 3e-2, B, optim=optim))
    assert_close(torch.tensor(_ours(ours)), torch.tensor(losses), rtol=1e-5, atol=1e-7)
    assert_close(ours.trained()[KEY_W], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("engine", ["fast", "reference", "batched"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lr_ratio", [1.0, 4.0])
def test_lora_training_is_torch_optim(engine, case, lr_ratio):
    """LoRA (and LoRA+'s second rate) on a frozen W, on the engines that declare it."""
    optim, (w, x, y, a0, b0) = CASES[case], _problem()
    spec = AdapterSpec(2, 4.0, lr_ratio=lr_ratio)
    a, b = torch.nn.Parameter(a0.clone()), torch.nn.Parameter(b0.clone())
    groups = [{"params": [a]}, {"params": [b], "lr": 2e-2 * lr_ratio}]
    forward = lambda xb: xb @ w.T + spec.scaling * (xb @ a.T) @ b.T  # noqa: E731
    (ea, eb), losses = _torch_loop([a, b], groups, forward, x, y, optim, 2e-2)
    if engine == "batched":
        ours = BatchedFinetune(w, [Lane(spec, a0, b0, 2e-2)], x, y, B, optim=optim)
        fit = train(_Lanes(ours), Schedule(EPOCHS, B, 1), torch.Generator().manual_seed(7))
        got, trained = [p.loss for p in fit.history.points[1:]], ours.adapters()[0]
    else:
        ours = build(engine, "lora", Task((KEY_A, KEY_B), w, spec, {KEY_A: a0, KEY_B: b0}, x, y, 2e-2, B, optim=optim))
        got, trained = _ours(ours), ours.trained()
    assert_close(torch.tensor(got), torch.tensor(losses), rtol=1e-5, atol=1e-7)
    assert_close(trained[KEY_A], ea, rtol=1e-5, atol=1e-6)
    assert_close(trained[KEY_B], eb, rtol=1e-5, atol=1e-6)


class _Lanes:
    """A one-lane batched engine seen through the one-lane loop's Engine protocol."""

    def __init__(self, engine):
        self.engine, self.name, self.n = engine, engine.name, engine.n

    def run_steps(self, batches):
        return self.engine.run_steps(batches)[0]

    def evaluate(self):
        return self.engine.evaluate()[0]

    def state(self):
        return self.engine.state()

    def load(self, tensors):
        self.engine.load(tensors)


@pytest.mark.parametrize("engine", ["fast", "reference"])
@pytest.mark.parametrize("case", ["adam+L2, warm-up then cosine", "sgd momentum+L2, cosine"])
def test_resuming_mid_schedule_changes_no_bit(engine, case):
    """The schedule's clock and SGD's momentum travel in the checkpoint: a resumed run is the uninterrupted one."""
    optim, (w, x, y, a0, b0) = CASES[case], _problem()
    spec = AdapterSpec(2, 4.0)

    def fresh():
        return build(engine, "lora", Task((KEY_A, KEY_B), w, spec, {KEY_A: a0, KEY_B: b0}, x, y, 2e-2, B, optim=optim))

    whole, states = fresh(), []
    train(whole, Schedule(EPOCHS, B, 1, checkpoint_every=2), torch.Generator().manual_seed(7), on_checkpoint=states.append)
    resumed = fresh()
    train(resumed, Schedule(EPOCHS, B, 1), torch.Generator().manual_seed(7), resume=states[0])
    assert states[0].epoch == 2
    for key in (KEY_A, KEY_B):
        assert torch.equal(resumed.trained()[key], whole.trained()[key])
