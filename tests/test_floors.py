"""The optima printed beside every result, held to independent computations: an alternating
least-squares optimisation, training runs, an exact base, and a Monte Carlo estimate."""

import pytest
import torch

from lora_cli.core import floors
from lora_cli.core.moments import Moments
from lora_cli.recipes import data as drawn
from lora_cli.recipes import pipeline
from lora_cli.train.engines import Runtime
from tests.conftest import tiny_config


def _als(x: torch.Tensor, r: torch.Tensor, rank: int, iterations: int = 3000) -> float:
    """min ‖R − x·(B·A)ᵀ‖² by alternating exact least squares over B and A (no SVD of R)."""
    a = torch.randn(rank, x.shape[1], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for _ in range(iterations):
        b = torch.linalg.lstsq(x @ a.T, r, driver="gelsd").solution.T  # (d_out, rank); gelsd: rank-deficient safe
        # vec(x·Aᵀ·Bᵀ) = (B ⊗ x)·vec(Aᵀ), column-major
        a = torch.linalg.lstsq(torch.kron(b, x), r.T.reshape(-1, 1), driver="gelsd").solution.reshape(rank, x.shape[1])
    return ((r - x @ (b @ a).T) ** 2).mean().item()


@pytest.mark.parametrize("n", [60, 6])  # more rows than inputs, and fewer (x'x singular)
def test_the_reduced_rank_floor_is_what_optimisation_reaches(n):
    g = torch.Generator().manual_seed(n)
    x, r = torch.randn(n, 8, generator=g, dtype=torch.float64), torch.randn(n, 6, generator=g, dtype=torch.float64)
    fit = Moments.of(x, r).residual()  # R = r itself
    assert fit.floors([2])[0] == pytest.approx(_als(x, r, 2), abs=1e-8)
    full = torch.linalg.lstsq(x, r).solution if n > 8 else torch.linalg.pinv(x) @ r
    assert fit.floors([None])[0] == pytest.approx(((r - x @ full) ** 2).mean().item(), abs=1e-8)


@pytest.mark.parametrize(
    "sets",
    [{}, {"adapter.rank": 2, "shift.kind": "lowrank", "shift.rank": 3}, {"shift.kind": "scale", "shift.value": 1.2},
     {"adapter.init": "pissa", "adapter.rank": 2, "data.noise_std": 0.1}, {"shift.kind": "random", "shift.value": 0.05}],
)
def test_no_training_run_ends_below_its_floor(sets):
    cfg = tiny_config(**sets)
    pre = pipeline.pretrain(cfg, Runtime("fast"))
    assert pre.history.final >= pipeline.pretrain_optimum(cfg).loss * (1 - 1e-5) - 1e-12
    fin = pipeline.finetune(cfg, pre.weight, Runtime("fast"))
    optimum = pipeline.finetune_optimum(cfg, pre.weight)
    assert fin.history.final >= optimum.loss * (1 - 1e-5) - 1e-12
    assert fin.history.final <= 1.5 * optimum.loss + 1e-6, "and training gets near it"


@pytest.mark.parametrize("rank, floor_is_zero", [(1, False), (2, False), (3, True), (4, True)])
def test_an_exact_base_without_noise_leaves_only_what_the_rank_cannot_hold(rank, floor_is_zero):
    """W = θᵀ and a rank-3 shift: rank ≥ 3 reaches zero (< 1e-10), a smaller rank cannot."""
    cfg = tiny_config(**{"adapter.rank": rank, "shift.kind": "lowrank", "shift.rank": 3, "shift.value": 0.3})
    theta, theta2 = drawn.thetas(cfg)
    optimum = pipeline.finetune_optimum(cfg, theta.T.contiguous())
    assert (optimum.loss < 1e-10) == floor_is_zero and (optimum.population < 1e-10) == floor_is_zero
    if not floor_is_zero:
        sigma = torch.linalg.svdvals((theta2 - theta).double())
        assert optimum.population == pytest.approx((sigma[rank:] ** 2).sum().item() / cfg.data.d_out, rel=1e-9)


def test_the_population_floor_matches_a_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    d_out, d_in, rank, noise = 12, 10, 3, 0.2
    target = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)  # D = θ2ᵀ − W
    u, sigma, vh = torch.linalg.svd(target)
    best = (u[:, :rank] * sigma[:rank]) @ vh[:rank]  # the best rank-r update
    x = torch.randn(400_000, d_in, generator=g, dtype=torch.float64)
    y = x @ target.T + noise * torch.randn(400_000, d_out, generator=g, dtype=torch.float64)
    estimate = ((y - x @ best.T) ** 2).mean().item()
    assert floors.population_floor(target, rank, noise) == pytest.approx(estimate, rel=0.01)
