"""Provable optima: the loss below which no rank-r update can go, in float64.

Eckart–Young–Mirsky: the best rank-r approximation of W in Frobenius norm is its truncated
SVD, so min over rank-r M of MSE(M, W) = Σ_{i>r} σᵢ² / (d·k).
"""

from __future__ import annotations

import torch


def singular_values(target: torch.Tensor) -> torch.Tensor:
    """σ₁ ≥ σ₂ ≥ … of `target`, in float64."""
    return torch.linalg.svdvals(target.double())


def eckart_young(target: torch.Tensor, rank: int) -> float:
    """min over rank-r M of MSE(M, target) = Σ_{i>r} σᵢ² / numel."""
    sigma = singular_values(target)
    return (sigma[rank:] ** 2).sum().item() / target.numel()


def regression_floor(x: torch.Tensor, residual: torch.Tensor, rank: int | None = None) -> float:
    """min over M of rank ≤ `rank` (None: any) of MSE(x·Mᵀ, residual): reduced-rank regression.

    With x = Q·T (Q orthonormal columns), ‖R − x·Mᵀ‖² = ‖R‖² − ‖QᵀR‖² + ‖QᵀR − T·Mᵀ‖², and
    T·Mᵀ ranges over all matrices of rank ≤ r, so the floor is (‖R‖² − Σ_{i≤r} σᵢ(QᵀR)²)/numel.
    QᵀR = L⁻¹·xᵀR with L = chol(xᵀx); when xᵀx is singular (n < d_in, or dependent columns)
    an orthonormal basis of x's columns from its SVD stands in.

    Args:
        x: (n, d_in) inputs. residual: (n, d_out) what the update must explain (for a
        finetune, y2 − x2·Wᵀ; for a pretrain, y itself).
    """
    return regression_floors(x, residual, [rank])[0]


def regression_floors(x: torch.Tensor, residual: torch.Tensor, ranks: list[int | None]) -> list[float]:
    """`regression_floor` for several ranks from one projection and one SVD (a sweep's trials)."""
    x64, r64 = x.double(), residual.double()
    gram = x64.T @ x64
    chol, info = torch.linalg.cholesky_ex(gram)
    if info.item() == 0:
        projected = torch.linalg.solve_triangular(chol, x64.T @ r64, upper=False)
    else:
        u, sigma, _ = torch.linalg.svd(x64, full_matrices=False)
        basis = u[:, sigma > sigma.max() * max(x64.shape) * torch.finfo(torch.float64).eps]
        projected = basis.T @ r64
    total = (r64**2).sum()
    energy = torch.linalg.svdvals(projected) ** 2 if any(r is not None and r < min(projected.shape) for r in ranks) else None
    floors = []
    for rank in ranks:
        explained = (projected**2).sum() if rank is None or rank >= min(projected.shape) else energy[:rank].sum()
        floors.append(max((total - explained).item(), 0.0) / residual.numel())
    return floors


def population_floor(shift_target: torch.Tensor, rank: int, noise_std: float) -> float:
    """min over rank-r ΔW of the expected MSE on fresh x ~ N(0, I):
    σ² + Σ_{i>r} σᵢ(D)²/d_out, with D = θ2ᵀ − W (d_out, d_in) what the adapter must learn."""
    return population_floors(shift_target, [rank], noise_std)[0]


def population_floors(shift_target: torch.Tensor, ranks: list[int], noise_std: float) -> list[float]:
    """`population_floor` for several ranks from one SVD."""
    d_out = shift_target.shape[0]
    sigma = singular_values(shift_target)
    return [noise_std**2 + (sigma[rank:] ** 2).sum().item() / d_out for rank in ranks]


def population_floor_in_rows(shift_target: torch.Tensor, rows: torch.Tensor, noise_std: float) -> float:
    """min over M (d_out, r) of the expected MSE on fresh x ~ N(0, I) when ΔW = M·rows, `rows`
    (r, d_in) fixed (LoRA-FA's frozen A₀): the best ΔW is D·P with P the projector onto the rows'
    span, so the floor is σ² + ‖D − D·P‖²/d_out, D = θ2ᵀ − W (d_out, d_in)."""
    d64 = shift_target.double()
    u, sigma, _ = torch.linalg.svd(rows.double().T, full_matrices=False)  # (d_in, r): the span, even for dependent rows
    basis = u[:, sigma > sigma.max() * max(rows.shape) * torch.finfo(torch.float64).eps]
    kept = ((d64 @ basis) ** 2).sum()
    return noise_std**2 + max(((d64**2).sum() - kept).item(), 0.0) / shift_target.shape[0]
