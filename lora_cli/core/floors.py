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
