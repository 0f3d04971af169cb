"""The batched engine: K adapters on one frozen base, trained together on the same rows.

A sweep's trials that share the data, the frozen base and the batch order differ only in
their adapters (rank, scaling, init, learning rates). Each one is a *lane* here. Every lane's
lora_A rows are stacked into one (Σr, d_in) matrix and every lane's lora_Bᵀ rows into one
(Σr, d_out) matrix, both views of one flat buffer that one fused optimiser step updates. With the
shared batch xb and the base's residual rows rb (as the fast engine caches them), c = 2/(b·d_out),
u_k = xb·A_kᵀ and s_k the lane's scaling, each lane's loss mean((s_k·u_k·B_kᵀ − rb)²) has

    dL/dB_kᵀ = c·(s_k²·G_k·B_kᵀ − s_k·u_kᵀ·rb),   G_k = u_kᵀ·u_k  (r_k, r_k)
    dL/du_kᵀ = c·(s_k²·H_k·u_kᵀ − s_k·B_kᵀ·rbᵀ),  H_k = B_kᵀ·B_k  (r_k, r_k)
    dL/dA_k  = dL/du_kᵀ · xb

so a step is four GEMMs over all Σr stacked rows, one small GEMM for every lane's uᵀu at
once (the lanes' Grams are its diagonal blocks, read through strided views), three batched
r×r products per run of lanes of equal rank, and one optimiser kernel call per run of equal
learning rates. The scalings ride on uᵀ's rows (ũ = s·u) and on dL/duᵀ's rows (× c·s) rather than
on Bᵀ. No (K, b, d_out) error tensor and no d_out×d_in product is formed. Every operation
keeps lanes apart (row-wise GEMMs, diagonal Gram blocks, per-lane batched products,
elementwise optimiser), so a lane that diverges to NaN cannot touch the others;
`stop` then zeroes it, and a zero lane has zero gradient and stays zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lora_cli.core.moments import Residual
from lora_cli.methods.lora import state_dict
from lora_cli.methods.spec import AdapterSpec
from lora_cli.train.fast import StepRows, held_out_residuals, inputs_and_residual, mse_of
from lora_cli.train.loop import TRAIN, held_out_metric
from lora_cli.train.optimizers import ADAM, FlatOptimizer, Optim


# A full-data evaluation of one lane streams about four (n, d_out) passes; the moments cost
# n·d_in·(d_in + d_out) float64 multiply-adds once. On the 2-core Xeon these notes were measured
# on, one lane-evaluation at the blog's size took 5.6 ms and the moments 0.27 s: 40 elements
# of the one against a multiply-add of the other.
MOMENTS_PER_ELEMENT = 1 / 40


def use_moments(x_shape: tuple[int, int], d_out: int, lane_evaluations: int, known: bool = False) -> bool:
    """Whether the lanes' losses should come from the data's moments: when they are computed
    anyway (`known`: the trials' optima need them), or cost less than evaluating each lane
    directly `lane_evaluations` times."""
    n, d_in = x_shape
    return known or MOMENTS_PER_ELEMENT * n * d_in * (d_in + d_out) < lane_evaluations * n * d_out


class MomentLosses:
    """The full-data MSE of many adapters from the float64 moments of the data (core/moments.py):

        n·d_out·loss_k = ‖R‖² − 2·s_k·⟨A_k·XᵀR, B_kᵀ⟩ + s_k²·⟨A_k·XᵀX·A_kᵀ, B_kᵀ·B_k⟩

    float64 because the terms cancel: near the optimum the loss is a small part of ‖R‖².
    Entries across lanes are masked with `where` (not multiplied by zero), so a lane that
    has run to NaN leaves the others' losses alone.
    """

    def __init__(self, fit: Residual, device: torch.device):
        self.xtx, self.xtr = fit.xtx.to(device), fit.xtr.to(device)
        self.rr, self.count = fit.rr, fit.numel

    def losses(self, a: torch.Tensor, bt: torch.Tensor, starts: list[int], scalings: list[float]) -> list[float]:
        a64, bt64 = a.double(), bt.double()
        lane = torch.repeat_interleave(torch.arange(len(scalings)), torch.tensor(starts).diff()).to(a.device)
        same = lane[:, None] == lane[None, :]
        quad = torch.where(same, (a64 @ self.xtx @ a64.T) * (bt64 @ bt64.T), 0.0).sum(dim=1)
        cross = ((a64 @ self.xtr) * bt64).sum(dim=1)
        s = torch.tensor(scalings, dtype=torch.float64, device=a.device)
        per_lane = lambda v: torch.zeros_like(s).index_add_(0, lane, v)  # noqa: E731
        return ((self.rr - 2 * s * per_lane(cross) + s**2 * per_lane(quad)) / self.count).tolist()


@dataclass(frozen=True)
class Lane:
    """One adapter to train: its spec, its initial factors and its learning rate."""

    spec: AdapterSpec
    lora_a: torch.Tensor  # (r, d_in)
    lora_b: torch.Tensor  # (d_out, r)
    lr: float
    train_a: bool = True  # False: lora_A stays as it starts (LoRA-FA)


def lr_segments(lanes: list[Lane], d_in: int, d_out: int) -> list[tuple[int, float]]:
    """(start, lr) of each run of equal learning rates over the flat [A rows | Bᵀ rows] buffer."""
    per_row = [(lane.spec.rank * d_in, lane.lr) for lane in lanes]
    per_row += [(lane.spec.rank * d_out, lane.lr * lane.spec.lr_ratio) for lane in lanes]
    segments, start = [], 0
    for size, lr in per_row:
        if not segments or segments[-1][1] != lr:
            segments.append((start, lr))
        start += size
    return segments


class BatchedFinetune:
    """Lanes of the optimiser on (lora_A, lora_B) so that x·Wᵀ + s_k·(x·A_kᵀ)·B_kᵀ ≈ y, W frozen and shared."""

    name = "batched"

    @torch.no_grad()
    def __init__(self, base_w: torch.Tensor, lanes: list[Lane], x: torch.Tensor, y: torch.Tensor, batch_size: int,
                 held_out: dict | None = None, fit: Residual | None = None, optim: Optim = ADAM):
        """`held_out`: name -> (x, y) evaluated beside the training data (each lane directly).
        `fit`: the data's float64 moments for R = y − x·Wᵀ of `base_w` (core/moments.Residual),
        when the lanes' full-data losses should come from them (see `use_moments`); else each
        lane is evaluated directly. `optim`: the lanes' one update rule and schedule (each lane keeps its learning rate)."""
        (n, d_in), d_out, b = x.shape, y.shape[1], batch_size
        ranks = [lane.spec.rank for lane in lanes]
        self.n, self.k = n, len(lanes)
        self.starts = [sum(ranks[:i]) for i in range(len(ranks) + 1)]  # lane k's rows: starts[k]:starts[k+1]
        rows, c = self.starts[-1], 2.0 / (b * d_out)
        self.xr = inputs_and_residual(base_w, x, y)
        self.x_all, self.residual = self.xr[:, :d_in], self.xr[:, d_in:]
        self.held_out = held_out_residuals(base_w, held_out or {})
        self.flat, self.grad = x.new_zeros(rows * (d_in + d_out)), x.new_zeros(rows * (d_in + d_out))
        self.a, self.bt = self.flat[: rows * d_in].view(rows, d_in), self.flat[rows * d_in :].view(rows, d_out)
        self.grad_a, self.grad_bt = self.grad[: rows * d_in].view(rows, d_in), self.grad[rows * d_in :].view(rows, d_out)
        for k, lane in enumerate(lanes):
            self.a[self.rows(k)] = lane.lora_a
            self.bt[self.rows(k)] = lane.lora_b.T
        (first, lr), *rest = lr_segments(lanes, d_in, d_out)
        self.opt = FlatOptimizer(self.flat, self.grad, lr, optim, lrs=rest or None)
        self.rows_of_steps = StepRows([self.xr], b, n // b, columns=[[d_in, d_out]], transposed=True)
        self.scalings, self.c = [lane.spec.scaling for lane in lanes], c
        per_row = torch.tensor([s for s, r in zip(self.scalings, ranks) for _ in range(r)], dtype=x.dtype, device=x.device)[:, None]
        self.row_s, self.row_cs = per_row, c * per_row  # s_k and c·s_k on lane k's rows
        self.ut, self.grad_ut = x.new_empty(rows, b), x.new_empty(rows, b)
        self.u_rows = self.ut.T  # a view made once
        self.gram = x.new_empty(rows, rows)  # ũ·ũᵀ: lane k's s²·uᵀu is its k-th diagonal block
        frozen = [self.rows(k) for k, lane in enumerate(lanes) if not lane.train_a]
        self.train_a = None  # 1 on the rows of lanes that train lora_A, 0 on LoRA-FA's (None: all train it)
        if frozen:
            self.train_a = x.new_ones(rows, 1)
            for part in frozen:
                self.train_a[part] = 0.0
        self.moments = MomentLosses(fit, x.device) if fit is not None else None
        self.buckets = self._buckets(ranks)

    def _buckets(self, ranks: list[int]) -> list[tuple[torch.Tensor, ...]]:
        """For each run of lanes of equal rank r (sorted lanes make one run per rank), (lanes, r, ·)
        views of the diagonal blocks of `gram`, of Bᵀ (and its transpose), of ũᵀ, dL/dBᵀ and
        dL/duᵀ, and an r×r buffer for BᵀB."""
        buckets, first, total = [], 0, self.starts[-1]
        for k in range(1, len(ranks) + 1):
            if k == len(ranks) or ranks[k] != ranks[first]:
                r, start = ranks[first], self.starts[first]
                rows, shape = slice(start, self.starts[k]), (k - first, r)
                grams = self.gram.as_strided((k - first, r, r), (r * total + r, total, 1), start * total + start)
                bt3, ut3, grad_bt3, grad_ut3 = (t[rows].view(*shape, -1) for t in (self.bt, self.ut, self.grad_bt, self.grad_ut))
                # transposed views made once: a view costs as much as a small op
                buckets.append((grams, bt3, bt3.transpose(1, 2), ut3, grad_bt3, grad_ut3, self.ut.new_empty(*shape, r)))
                first = k
        return buckets

    def rows(self, k: int) -> slice:
        return slice(self.starts[k], self.starts[k + 1])

    @torch.no_grad()
    def run_steps(self, batches: torch.Tensor) -> list[float]:
        last = batches.shape[0] - 1
        for step, (xb, rb, xb_t, rb_t) in enumerate(self.rows_of_steps.epoch(batches.to(self.xr.device))):
            self._gradients(xb, rb, xb_t, rb_t)
            if step == last:
                losses = self._batch_losses(rb)
            self.opt.step()
        return losses

    def _gradients(self, xb: torch.Tensor, rb: torch.Tensor, xb_t: torch.Tensor, rb_t: torch.Tensor) -> None:
        torch.mm(self.a, xb_t, out=self.ut)  # u_kᵀ for every lane, (Σr, b)
        self.ut.mul_(self.row_s)  # ũᵀ = s·uᵀ
        self.grad_bt.addmm_(self.ut, rb, beta=0, alpha=-self.c)  # −c·s·uᵀ·rb
        self.grad_ut.addmm_(self.bt, rb_t, beta=0, alpha=-1)  # −Bᵀ·rbᵀ (× c·s below)
        torch.mm(self.ut, self.u_rows, out=self.gram)  # s²·uᵀu on the diagonal blocks
        for grams, bt3, bt3_t, ut3, grad_bt3, grad_ut3, gram_b in self.buckets:
            grad_bt3.baddbmm_(grams, bt3, alpha=self.c)  # + c·s²·uᵀu·Bᵀ
            torch.bmm(bt3, bt3_t, out=gram_b)  # BᵀB per lane
            grad_ut3.baddbmm_(gram_b, ut3)  # + BᵀB·s·uᵀ
        self.grad_ut.mul_(self.row_cs)  # c·s·(s·BᵀB·uᵀ − Bᵀ·rbᵀ)
        torch.mm(self.grad_ut, xb, out=self.grad_a)  # dL/dA, (Σr, d_in)
        if self.train_a is not None:
            self.grad_a.mul_(self.train_a)  # with no weight decay a zero gradient moves nothing: A stays as it started

    def _batch_losses(self, rb: torch.Tensor) -> list[float]:
        """Each lane's MSE on the step's batch, before the step's update (ũᵀ holds s·uᵀ)."""
        return [mse_of(torch.addmm(rb, self.ut[self.rows(k)].T, self.bt[self.rows(k)], beta=-1)) for k in range(self.k)]

    @torch.no_grad()
    def evaluate(self) -> list[dict[str, float]]:
        """Each lane's metrics: its full-data MSE from the float64 moments XᵀX, XᵀR when the engine
        was told to use them (see `moments`), else directly; each held-out split's directly."""
        train = self.moments.losses(self.a, self.bt, self.starts, self.scalings) if self.moments is not None else self._direct(self.x_all, self.residual)
        out = [{TRAIN: loss} for loss in train]
        for split, (x, residual) in self.held_out.items():
            for lane, loss in zip(out, self._direct(x, residual)):
                lane[held_out_metric(split)] = loss
        return out

    def _direct(self, x: torch.Tensor, residual: torch.Tensor) -> list[float]:
        """Each lane's MSE on (x, residual): one X·Aᵀ for all lanes, then each lane's product."""
        u_all = x @ self.a.T  # (n, Σr)
        error = torch.empty_like(residual)
        out = []
        for k, s in enumerate(self.scalings):
            torch.addmm(residual, u_all[:, self.rows(k)], self.bt[self.rows(k)], beta=-1, alpha=s, out=error)
            out.append(mse_of(error))
        return out

    @torch.no_grad()
    def stop(self, k: int) -> None:
        """Freeze lane k at zero (it diverged): zero factors get zero gradients from now on."""
        self.opt.zero_(lambda tensor: self._lane_views(tensor, k))

    def _lane_views(self, flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows, d_in = self.a.shape
        a = flat[: rows * d_in].view(rows, d_in)[self.rows(k)]
        return a, flat[rows * d_in :].view(rows, -1)[self.rows(k)]

    def state(self) -> dict[str, torch.Tensor]:
        return self.opt.state("adapters")

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.opt.load("adapters", tensors)

    def adapters(self) -> list[dict[str, torch.Tensor]]:
        """Each lane's adapter as trained, as a PEFT-keyed state dict."""
        return [state_dict(self.a[self.rows(k)].clone(), self.bt[self.rows(k)].T.contiguous()) for k in range(self.k)]
