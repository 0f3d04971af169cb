"""The exact learning–forgetting frontier of a rank-r update, on population losses (float64).

For an update Δ (d_out, d_in) of the frozen base W, with D = θ2ᵀ − W what the target needs:

    target loss  L_t(Δ) = σ² + tr((D − Δ)·Σ_t·(D − Δ)ᵀ) / d_out     (fresh target rows)
    forgetting   F(Δ)   = tr(Δ·Σ_s·Δᵀ) / d_out                        (what Δ adds to the source loss
                                                                     of a base that fits the source)

For λ ≥ 0 the rank-r minimiser of L_t + λ·F is Δ_λ = [D·Σ_t·M^-½]_r·M^-½, M = Σ_t + λ·Σ_s:
completing the square, L_t + λ·F = ‖(Δ − D·Σ_t·M⁻¹)·M^½‖²/d_out + const, and Δ ↦ Δ·M^½ keeps
the rank, so Eckart–Young applies to D·Σ_t·M^-½. The frontier is {(L_t(Δ_λ), F(Δ_λ))}; without
a rank limit Δ_λ = D·Σ_t·M⁻¹. Everything is computed in the whitened coordinates of Σ_s
(Δ' = Δ·Σ_s^½), where M' = Σ_t' + λ·I shares one eigenbasis for every λ.
"""

from __future__ import annotations

import torch

LAMBDAS = (0.0, *(10.0 ** (k / 4) for k in range(-12, 13)))  # 0, then 1e-3 … 1e3: the frontier's 26 points


def _sym_power(matrix: torch.Tensor, power: float) -> torch.Tensor:
    w, v = torch.linalg.eigh(matrix)
    return (v * w.clamp_min(0.0) ** power) @ v.T


def losses(d: torch.Tensor, delta: torch.Tensor, sigma_t: torch.Tensor, sigma_s: torch.Tensor, noise_std: float) -> tuple[float, float]:
    """(L_t(Δ), F(Δ)) of one update, in float64."""
    d, delta, sigma_t, sigma_s = (t.double() for t in (d, delta, sigma_t, sigma_s))
    error = d - delta
    d_out = d.shape[0]
    return (noise_std**2 + torch.trace(error @ sigma_t @ error.T).item() / d_out, torch.trace(delta @ sigma_s @ delta.T).item() / d_out)


def frontier(d: torch.Tensor, sigma_t: torch.Tensor, sigma_s: torch.Tensor, rank: int | None, noise_std: float,
             lambdas: tuple[float, ...] = LAMBDAS) -> list[tuple[float, float, float]]:
    """(λ, L_t, F) of Δ_λ for each λ, rank-limited to `rank` (None: full rank). (As λ → ∞,
    Δ_λ → 0: the base itself, `losses(d, 0, …)`.)"""
    d, sigma_t, sigma_s = d.double(), sigma_t.double(), sigma_s.double()
    half, inv_half = _sym_power(sigma_s, 0.5), _sym_power(sigma_s, -0.5)
    target_w = inv_half @ sigma_t @ inv_half  # Σ_t in whitened coordinates
    mu, v = torch.linalg.eigh(target_w)
    mu = mu.clamp_min(0.0)
    dv = d @ half @ v  # D' = D·Σ_s^½, in the eigenbasis
    points = []
    for lam in lambdas:
        scale = lam + mu
        if rank is None:
            delta_w = (dv * (mu / scale.clamp_min(1e-300))) @ v.T  # D'·Σ_t'·M'⁻¹
        else:
            u, s, vt = torch.linalg.svd(dv * (mu / scale.clamp_min(1e-300).sqrt()), full_matrices=False)  # D'·Σ_t'·M'^-½ (eigenbasis)
            kept = (u[:, :rank] * s[:rank]) @ vt[:rank]
            delta_w = (kept / scale.clamp_min(1e-300).sqrt()) @ v.T  # ·M'^-½
        points.append((lam, *losses(d, delta_w @ inv_half, sigma_t, sigma_s, noise_std)))
    return points
