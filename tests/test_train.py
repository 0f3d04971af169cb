"""The training loop with the reference engine, against an independent hand-written loop."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from lora_cli.methods.modules import linear_from_weight
from lora_cli.train.engines import engine_entry
from lora_cli.train.loop import Schedule, train
from lora_cli.train.reference import ReferenceEngine
from lora_cli.train.sampler import epoch_batches
from tests.conftest import engine_for


def _problem(n=64, d_in=6, d_out=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=g)
    y = x @ torch.randn(d_in, d_out, generator=g)
    return x, y


def test_loop_matches_a_hand_written_adam_loop():
    x, y = _problem()
    torch.manual_seed(1)
    w0 = nn.Linear(6, 4, bias=False).weight.detach()
    reference = linear_from_weight(w0)
    engine = engine_for("reference", w0, None, {"weight": w0}, x, y, 0.05, 16)

    fit = train(engine, Schedule(epochs=5, batch_size=16, log_every=2), torch.Generator().manual_seed(7))

    # the same recipe written out by hand: 64 // 16 = 4 steps an epoch, the same batches
    opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(7)
    losses = {0: F.mse_loss(reference(x), y).item()}
    for epoch in range(1, 6):
        for idx in epoch_batches(64, 16, 4, g):
            loss = F.mse_loss(reference(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch in (2, 4, 5):
            losses[epoch] = F.mse_loss(reference(x), y).item()

    history = fit.history
    assert fit.divergence is None
    assert [p.epoch for p in history.points] == [0, 2, 4, 5]
    assert [p.step for p in history.points] == [0, 8, 16, 20]
    assert_close(torch.tensor([p.loss for p in history.points]), torch.tensor(list(losses.values())))
    assert_close(engine.trained()["weight"], reference.weight.detach())
    assert history.final < history.baseline


def test_callback_sees_every_epoch_and_the_logged_losses():
    x, y = _problem()
    model = nn.Linear(6, 4, bias=False)
    seen = []
    engine = ReferenceEngine(model, [model.weight], x, y, 0.01)
    fit = train(engine, Schedule(epochs=3, batch_size=8, log_every=2), torch.Generator().manual_seed(0), lambda e, loss: seen.append((e, loss)))
    assert [e for e, _ in seen] == [0, 1, 2, 3]
    assert seen[1][1] is None and seen[2][1] == fit.history.points[1].loss


def test_divergence_is_returned_with_the_last_good_loss():
    x, y = _problem()
    model = nn.Linear(6, 4, bias=False)
    with torch.no_grad():
        model.weight.fill_(1e30)  # squares overflow float32 on the first step
    engine = ReferenceEngine(model, [model.weight], x * 1e10, y, 1e6)
    fit = train(engine, Schedule(epochs=3, batch_size=8, log_every=1), torch.Generator().manual_seed(0))
    assert fit.divergence is not None and (fit.divergence.epoch, fit.divergence.step) == (1, 8)
    assert fit.divergence.last_good == fit.history.points[-1] and len(fit.history.points) == 1
    assert "by epoch 1 (step 8); the last good loss was" in fit.divergence.describe()


def test_unknown_engine_raises_and_never_falls_back():
    from lora_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown engine; choose one of auto, fast, reference"):
        engine_entry("nosuch")
