"""The reference training loop, against an independent hand-written loop."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.testing import assert_close

from lora_cli.config.loading import TrainConfig
from lora_cli.errors import DivergenceError
from lora_cli.train.loop import epoch_batches, fit


def _problem(n=64, d_in=6, d_out=4):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=g)
    y = x @ torch.randn(d_in, d_out, generator=g)
    return x, y


def test_fit_matches_a_hand_written_adam_loop():
    x, y = _problem()
    cfg = TrainConfig(epochs=5, batch_size=16, lr=0.05, log_every=2)
    torch.manual_seed(1)
    model = nn.Linear(6, 4, bias=False)
    reference = nn.Linear(6, 4, bias=False)
    reference.weight.data.copy_(model.weight.data)

    history = fit(model, [model.weight], x, y, cfg, torch.Generator().manual_seed(7))

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

    assert [p.epoch for p in history.points] == [0, 2, 4, 5]
    assert [p.step for p in history.points] == [0, 8, 16, 20]
    assert_close(torch.tensor([p.loss for p in history.points]), torch.tensor(list(losses.values())))
    assert_close(model.weight, reference.weight)
    assert history.final < history.baseline


def test_callback_sees_every_epoch_and_the_logged_losses():
    x, y = _problem()
    model = nn.Linear(6, 4, bias=False)
    seen = []
    history = fit(model, [model.weight], x, y, TrainConfig(epochs=3, batch_size=8, lr=0.01, log_every=2),
                  torch.Generator().manual_seed(0), lambda e, loss: seen.append((e, loss)))
    assert [e for e, _ in seen] == [0, 1, 2, 3]
    assert seen[1][1] is None and seen[2][1] == history.points[1].loss


def test_divergence_stops_with_the_last_finite_loss():
    x, y = _problem()
    model = nn.Linear(6, 4, bias=False)
    with torch.no_grad():
        model.weight.fill_(1e30)  # squares overflow float32 on the first step
    cfg = TrainConfig(epochs=3, batch_size=8, lr=1e6, log_every=1)
    with pytest.raises(DivergenceError, match=r"by epoch 1 \(step 8\).*Lower the learning rate"):
        fit(model, [model.weight], x * 1e10, y, cfg, torch.Generator().manual_seed(0))
