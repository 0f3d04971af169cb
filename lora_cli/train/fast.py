"""The fast engine: the reference engine's math without autograd and without waste.

Same data, same batches (`epoch_batches`), same loss and the same update rule;
only the arithmetic is arranged to do less:

* Gradients of the MSE of one linear map are written out by hand, into
  preallocated buffers; the 2/(b·d_out) factor is folded into the GEMMs (addmm).
* Pretrain: two GEMMs per step, forward and weight-gradient, and nothing else
  of size d_in·d_out except the fused optimiser step.
* Finetune: the base is frozen and the data fixed, so base(X2) is a constant.
  The residual R = y2 − X2·Wᵀ is computed once and the adapter is fitted to it,
  which removes the only large GEMM from every step. Each step then costs
  O(b·r·(d_in + d_out)); ΔW is never formed. The optimiser (Adam, AdamW or SGD:
  train/optimizers.py) runs on one flat buffer, one fused kernel call.
* Full-data evaluation of the adapter reuses R: O(n·r·(d_in + d_out)).
"""

from __future__ import annotations

import torch

from lora_cli.methods.lora import state_dict
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_W
from lora_cli.train.loop import evaluated
from lora_cli.train.optimizers import FlatOptimizer
from lora_cli.runtime.distributed import World, all_reduce_
from lora_cli.errors import ConfigError


# Rows gathered per index_select: a whole run of steps at once, so the one op that runs in
# parallel meets its partner thread ~16 times an epoch at the blog's size instead of every
# step; on a busy CPU each meeting can cost a scheduler slice (bench/bench_contention.py).
GATHER_ELEMENTS = 1 << 22


class StepRows:
    """Each step's rows of (n, ·) tensors, gathered many steps at a time.

    Yields, per step, (b, ·) views of each source's rows, or of column blocks of them
    (`columns`: widths per source), laid out as a per-step gather would lay them out, so the
    arithmetic and its bytes are the same as gathering each step alone. The views are made
    once: a view costs as much as a small op. `transposed`: each step's tuple also holds
    every part's transpose, after the parts.
    """

    def __init__(self, sources: list[torch.Tensor], batch_size: int, steps: int, columns=None, transposed: bool = False):
        width = sum(t.shape[1] for t in sources)
        self.chunk = max(1, min(steps, GATHER_ELEMENTS // (batch_size * width)))  # steps a gather
        self.sources, self.b = sources, batch_size
        self.buffers = [t.new_empty(self.chunk * batch_size, t.shape[1]) for t in sources]
        columns = columns or [[t.shape[1]] for t in sources]

        def step_views(k: int) -> tuple[torch.Tensor, ...]:
            rows = slice(k * batch_size, (k + 1) * batch_size)
            parts = tuple(part for buf, cols in zip(self.buffers, columns) for part in buf[rows].split(cols, dim=1))
            return parts + tuple(part.T for part in parts) if transposed else parts

        self.views = [step_views(k) for k in range(self.chunk)]

    def epoch(self, batches: torch.Tensor):
        """(steps, b) row indices -> each step's tuple of views."""
        for first in range(0, batches.shape[0], self.chunk):
            idx = batches[first : first + self.chunk].reshape(-1)
            for source, buffer in zip(self.sources, self.buffers):
                torch.index_select(source, 0, idx, out=buffer[: idx.numel()])
            yield from self.views[: idx.numel() // self.b]


class Share:
    """One rank's part of data-parallel training: its contiguous rows of every batch; its
    gradients, computed with the whole batch's 1/b, summed over the ranks so that every rank
    takes the one-process step (shares differ by at most a row, and the sum weighs each row
    once). In one process it is the whole batch and sums nothing."""

    def __init__(self, world: World, batch_size: int):
        if world.size > batch_size:
            raise ConfigError(f"{world.size} processes cannot share batches of {batch_size} rows; use at most {batch_size} processes")
        self.world, self.batch_size, self.part = world, batch_size, world.rows(batch_size)
        self.size = self.part.stop - self.part.start

    def of(self, batches: torch.Tensor) -> torch.Tensor:
        """(steps, b) row indices -> this rank's (steps, b_rank)."""
        return batches if self.world.size == 1 else batches[:, self.part].contiguous()

    def sum_(self, grad: torch.Tensor) -> None:
        all_reduce_(grad, self.world)

    def mse(self, err: torch.Tensor, factor: float) -> float:
        """The whole batch's mean((err / factor)²) from each rank's rows of `err`."""
        if self.world.size == 1:
            return mse_of(err.clone()) / factor**2
        total = all_reduce_(err.double().square().sum().reshape(1), self.world)
        return total.item() / factor**2 / (self.batch_size * err.shape[1])


def mse_of(error: torch.Tensor) -> float:
    """mean(error²), summed as F.mse_loss sums (vector_norm accumulates in float32 and was
    0.1–0.5 % off at the blog's size). Squares `error` in place: pass a temporary."""
    return error.square_().mean().item()


class FastPretrain:
    """The optimiser on W (d_out, d_in) so that y ≈ x·Wᵀ, from w0: two GEMMs a step."""

    name = "fast"

    def __init__(self, task, world: World = World()):
        """`task.start["weight"]` is w0; `world`: under torchrun, this rank takes its share of
        each batch's rows and the gradients are summed over the ranks (`Share`)."""
        w0, x, y, lr = task.start[KEY_W], task.x, task.y, task.lr
        self.x, self.y, self.n, self.held_out = x, y, x.shape[0], task.held_out
        b, d_out = task.batch_size, y.shape[1]
        self.scale = 2.0 / (b * d_out)
        self.w, self.grad = w0.clone(), torch.empty_like(w0)
        self.opt = FlatOptimizer(self.w, self.grad, lr, task.optim)
        self.share = Share(world, b)
        self.rows = StepRows([x, y], self.share.size, self.n // b)
        self.err = y.new_empty(self.share.size, d_out)  # scale·(xb·Wᵀ − yb) = dL/dpred
        self.w_t, self.err_t = self.w.T, self.err.T  # transposed views made once: a view costs as much as a small op

    @torch.no_grad()
    def run_steps(self, batches: torch.Tensor) -> float:
        scale, err = self.scale, self.err
        for xb, yb in self.rows.epoch(self.share.of(batches.to(self.x.device))):
            torch.addmm(yb, xb, self.w_t, beta=-scale, alpha=scale, out=err)  # (b, d_out)
            torch.mm(self.err_t, xb, out=self.grad)  # (d_out, b)·(b, d_in): dL/dW
            self.share.sum_(self.grad)
            self.opt.step()
        return self.share.mse(err, scale)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        return {metric: mse_of(torch.addmm(y, x, self.w_t, beta=-1)) for metric, (x, y) in evaluated(self.x, self.y, self.held_out).items()}

    def state(self) -> dict[str, torch.Tensor]:
        return self.opt.state("weight")

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.opt.load("weight", tensors)

    def trained(self) -> dict[str, torch.Tensor]:
        return {KEY_W: self.w}


@torch.no_grad()
def inputs_and_residual(base_w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """[X | R] (n, d_in + d_out), R = y − X·Wᵀ: the frozen base's error, a constant of
    finetuning, beside the rows it belongs to so that one gather fetches both."""
    n, d_in = x.shape
    xr = x.new_empty(n, d_in + y.shape[1])
    for rows in torch.arange(n, device=x.device).split(4096):  # chunks bound the temporary
        xr[rows, :d_in] = x[rows]
        xr[rows, d_in:] = torch.addmm(y[rows], x[rows], base_w.T, alpha=-1)
    return xr


def held_out_residuals(base_w: torch.Tensor, held_out: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (X, R = y − X·Wᵀ) of each held-out split: the frozen base's error, once."""
    return {name: (x, torch.addmm(y, x, base_w.T, alpha=-1)) for name, (x, y) in held_out.items()}


class FastFinetune:
    """The optimiser on lora_A (r, d_in), lora_B (d_out, r) so x·Wᵀ + s·(x·Aᵀ)·Bᵀ ≈ y, W frozen; on
    lora_B alone when the task does not train lora_A (LoRA-FA: no gradient for A is formed), on
    lora_A alone when it does not train lora_B (frozen B)."""

    name = "fast"

    @torch.no_grad()
    def __init__(self, task, world: World = World()):
        base_w, spec, x, y, lr, batch_size = task.frozen, task.spec, task.x, task.y, task.lr, task.batch_size
        a0, b0, self.train_a, self.train_b = task.start[KEY_A], task.start[KEY_B], KEY_A in task.trains, KEY_B in task.trains
        n, d_in = x.shape
        d_out, r, b = y.shape[1], a0.shape[0], batch_size
        self.n, self.s, self.scale = n, spec.scaling, 2.0 / (b * d_out)
        self.xr = inputs_and_residual(base_w, x, y)
        self.x_all, self.residual = self.xr[:, :d_in], self.xr[:, d_in:]
        self.held_out = held_out_residuals(base_w, task.held_out)
        self.flat = x.new_empty(r * d_in + d_out * r)  # [lora_A | lora_B], so the optimiser is one pass
        self.grad = torch.empty_like(self.flat)
        self.lora_a, self.lora_b = self.flat[: r * d_in].view(r, d_in), self.flat[r * d_in :].view(d_out, r)
        self.grad_a, self.grad_b = self.grad[: r * d_in].view(r, d_in), self.grad[r * d_in :].view(d_out, r)
        self.lora_a.copy_(a0)
        self.lora_b.copy_(b0)
        if not self.train_b:  # lora_A's part of the buffers only (frozen B)
            self.opt = FlatOptimizer(self.flat[: r * d_in], self.grad[: r * d_in], lr, task.optim)
        elif self.train_a:
            lrs = [(r * d_in, lr * spec.lr_ratio)] if spec.lr_ratio != 1 else None  # LoRA+: lora_B's rate
            self.opt = FlatOptimizer(self.flat, self.grad, lr, task.optim, lrs=lrs)
        else:  # lora_B's part of the buffers only
            self.opt = FlatOptimizer(self.flat[r * d_in :], self.grad[r * d_in :], lr * spec.lr_ratio, task.optim)
        self.share = Share(world, b)  # this rank's rows of each batch (all of them in one process)
        self.rows = StepRows([self.xr], self.share.size, n // b, columns=[[d_in, d_out]])
        self.u, self.grad_u = x.new_empty(self.share.size, r), x.new_empty(self.share.size, r)
        self.err = y.new_empty(self.share.size, d_out)  # s·scale·(s·u·Bᵀ − rb) = s·dL/dpred
        self.a_t, self.b_t = self.lora_a.T, self.lora_b.T  # views made once
        self.err_t, self.grad_u_t = self.err.T, self.grad_u.T

    @torch.no_grad()
    def run_steps(self, batches: torch.Tensor) -> float:
        s, scale, u, grad_u, err = self.s, self.scale, self.u, self.grad_u, self.err
        err_t, grad_u_t = self.err_t, self.grad_u_t
        for xb, rb in self.rows.epoch(self.share.of(batches.to(self.xr.device))):
            torch.mm(xb, self.a_t, out=u)  # (b, r)
            torch.addmm(rb, u, self.b_t, beta=-s * scale, alpha=s * s * scale, out=err)
            if self.train_b:
                torch.mm(err_t, u, out=self.grad_b)  # dL/dB = s·errᵀ·u, (d_out, r)
            if self.train_a:
                torch.mm(err, self.lora_b, out=grad_u)  # dL/du = s·err·B, (b, r)
                torch.mm(grad_u_t, xb, out=self.grad_a)  # dL/dA = (dL/du)ᵀ·xb, (r, d_in)
            self.share.sum_(self.opt.grad)
            self.opt.step()
        return self.share.mse(err, s * scale)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        sets = evaluated(self.x_all, self.residual, self.held_out)
        return {metric: mse_of(torch.addmm(residual, x @ self.a_t, self.b_t, beta=-1, alpha=self.s)) for metric, (x, residual) in sets.items()}

    def state(self) -> dict[str, torch.Tensor]:
        return self.opt.state("adapter")

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.opt.load("adapter", tensors)

    def trained(self) -> dict[str, torch.Tensor]:
        """The adapter as trained, as a PEFT-keyed state dict."""
        return state_dict(self.lora_a.clone(), self.lora_b.clone())
