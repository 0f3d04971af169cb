"""The learning–forgetting frontier's closed form, held to a numerical optimisation (L-BFGS over
rank-r factors, several starts) of the weighted objective at three values of λ, to 1e-6; its
λ = 0 end to the population optimum computed another way; its shape (monotone both ways)."""

import pytest
import torch

from lora_cli.core.floors import population_floor, whitened
from lora_cli.core.frontier import LAMBDAS, frontier, losses

D_OUT, D_IN = 6, 9


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _problem():
    d = torch.randn(D_OUT, D_IN, generator=_g(0), dtype=torch.float64)
    covs = []
    for seed in (1, 2):
        a = torch.randn(D_IN, D_IN, generator=_g(seed), dtype=torch.float64)
        covs.append(a @ a.T / D_IN + 0.05 * torch.eye(D_IN, dtype=torch.float64))
    return d, covs[0], covs[1]


def _minimum(d, sigma_t, sigma_s, lam: float, rank: int | None) -> float:
    """min over rank-r B·A (or any Δ) of L_t + λ·F (noise 0), by L-BFGS from three starts."""
    best = float("inf")
    for seed in range(3):
        width = rank or D_IN
        b = torch.randn(D_OUT, width, generator=_g(10 + seed), dtype=torch.float64, requires_grad=True)
        a = torch.randn(width, D_IN, generator=_g(20 + seed), dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([a, b], max_iter=4000, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe")

        def objective():
            opt.zero_grad()
            delta = b @ a
            error = d - delta
            value = (torch.trace(error @ sigma_t @ error.T) + lam * torch.trace(delta @ sigma_s @ delta.T)) / D_OUT
            value.backward()
            return value

        for _ in range(4):
            opt.step(objective)
        best = min(best, objective().item())
    return best


@pytest.mark.parametrize("rank", [2, None], ids=["rank 2", "full rank"])
def test_each_frontier_point_minimises_the_weighted_objective(rank):
    d, sigma_t, sigma_s = _problem()
    for lam, target, forgetting in frontier(d, sigma_t, sigma_s, rank, 0.0, (0.1, 1.0, 10.0)):
        assert target + lam * forgetting == pytest.approx(_minimum(d, sigma_t, sigma_s, lam, rank), rel=1e-6)


def test_the_frontier_runs_from_the_best_target_loss_to_the_base_and_is_monotone():
    d, sigma_t, sigma_s = _problem()
    points = frontier(d, sigma_t, sigma_s, 2, 0.1)
    assert [lam for lam, _, _ in points] == list(LAMBDAS)
    floor = population_floor(whitened(d, torch.linalg.cholesky(sigma_t)), 2, 0.1)  # any S with S·Sᵀ = Σ_t whitens
    assert points[0][1] == pytest.approx(floor, rel=1e-10)
    targets, forgettings = [p[1] for p in points], [p[2] for p in points]
    assert all(a <= b + 1e-12 for a, b in zip(targets, targets[1:])) and all(a >= b - 1e-12 for a, b in zip(forgettings, forgettings[1:]))
    base = losses(d, torch.zeros_like(d), sigma_t, sigma_s, 0.1)
    assert base[1] == 0 and targets[-1] < base[0] and forgettings[-1] < 1e-2 * forgettings[0]
    assert frontier(d, sigma_t, sigma_s, None, 0.1, (0.0,))[0][1] == pytest.approx(0.01, abs=1e-12)  # full rank: only the noise
