"""Provable optima: the loss below which no rank-r update can go, in float64.

Eckart–Young–Mirsky: the best rank-r approximation of W in Frobenius norm is its truncated
SVD, so min over rank-r M of MSE(M, W) = Σ_{i>r} σᵢ² / (d·k). The optima on a data set
(least squares, reduced-rank regression) are read from its moments: core/moments.py.
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


def whitened(matrix: torch.Tensor, sigma_half: torch.Tensor | None) -> torch.Tensor:
    """matrix·Σ^½ in float64 (rows in input space); `matrix` itself when Σ = I (None)."""
    return matrix if sigma_half is None else matrix.double() @ sigma_half.double()


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


def population_floor_in_columns(shift_target: torch.Tensor, columns: torch.Tensor, noise_std: float) -> float:
    """min over M (r, d_in) of the expected MSE on fresh x ~ N(0, I) when ΔW = `columns`·M,
    `columns` (d_out, r) fixed (frozen B₀): the best ΔW is P·D with P the projector onto the
    columns' span, so the floor is σ² + ‖D − P·D‖²/d_out, D = θ2ᵀ − W (d_out, d_in)."""
    transposed = population_floor_in_rows(shift_target.T, columns.T, 0.0)  # ‖Dᵀ − Dᵀ·P‖²/d_in: the same norm
    return noise_std**2 + transposed * shift_target.shape[1] / shift_target.shape[0]
