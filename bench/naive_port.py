"""The blog's whole pipeline ported literally to PyTorch, on lora's data and batches.

Pretrain nn.Linear with the blog's train() (loss printed every 10 epochs), shift θ by 1,
fine-tune its lora_nn_linear (A·B formed every step), merge in place. Used by
bench_posit.py --whole as the baseline that `lora run configs/posit.yaml` is compared to.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from variants import BlogLoraLinear

from lora_cli.config.loading import load_config
from lora_cli.core.data import init_linear_weight
from lora_cli.methods.inits import init_adapter
from lora_cli.methods.modules import linear_from_weight
from lora_cli.core.rng import generator
from lora_cli.recipes.data import regression, thetas
from lora_cli.train.sampler import epoch_batches


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, batch_size=128, epochs=100):
    opt = torch.optim.Adam(model.parameters())
    n = x.shape[0]
    for epoch in range(1, epochs + 1):
        for idx in epoch_batches(n, batch_size, n // batch_size, gen):
            loss = F.mse_loss(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if epoch % 10 == 0:
            with torch.no_grad():
                loss = F.mse_loss(model(x), y)
            print(f"[ {epoch} ] Loss: {loss.item():.7g}")


def run(seed: int = 0) -> dict:
    cfg = load_config(None, [("bench", "seed", seed)])
    theta = thetas(cfg)[0]
    x, y = regression(cfg, theta, "pretrain")
    model = linear_from_weight(init_linear_weight(cfg.data.d_in, cfg.data.d_out, generator(seed, "init_base")))
    train(model, x, y, generator(seed, "batches_pretrain"))
    x2, y2 = regression(cfg, theta + 1, "finetune")
    with torch.no_grad():
        base_loss = F.mse_loss(model(x2), y2).item()
    spec = cfg.adapter.spec()
    a = init_adapter(model.weight.detach(), spec, generator(seed, "init_adapter"))[0].T  # blog A: (d_in, r)
    lora = BlogLoraLinear(model, a, spec.scaling)
    train(lora, x2, y2, generator(seed, "batches_finetune"))
    with torch.no_grad():
        delta = torch.matmul(lora.A, lora.B) * lora.scaling
        model.weight.add_(delta.T)
        merged_loss = F.mse_loss(model(x2), y2).item()
    return {"base_loss": base_loss, "final_loss": merged_loss, "delta_mean": delta.mean().item()}
