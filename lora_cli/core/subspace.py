"""How a learned update ΔW (d_out, d_in) relates to the true one: its spectrum and stable
rank, the principal angles between their top singular subspaces, the share of the true
update's energy inside ΔW's subspaces, and the relative error. All in float64.

Principal angles come from sines: sin θ are the singular values of (I − U₁U₁ᵀ)·U₂, and
arcsin keeps small angles exact where arccos of the cosines rounds them to 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

SHOWN = 20  # singular values kept in a record
# relative to σ₁: below this a direction is absent. The tensors are float32, whose rounding
# leaves singular values near 1e-8·σ₁ in a matrix of exact rank 1.
NEGLIGIBLE = 1e-6


@dataclass(frozen=True)
class Comparison:
    """ΔW against one true update T."""

    relative_error: float  # ‖ΔW − T‖_F / ‖T‖_F
    energy_captured: float  # ‖U_kᵀ·T·V_k‖²_F / ‖T‖²_F, U_k, V_k: ΔW's top-k singular vectors
    best_energy: float  # Σ_{i≤k} σᵢ(T)² / ‖T‖²_F: the most any rank-k pair of subspaces holds
    column_angles: list[float]  # degrees, between ΔW's and T's top-k column spaces, ascending
    row_angles: list[float]  # the same for the row spaces
    singular_values: list[float]  # T's largest, for the plot


@dataclass(frozen=True)
class Diagnostics:
    rank: int  # k: the adapter rank, or fewer where T or ΔW has fewer directions
    singular_values: list[float]  # ΔW's largest
    stable_rank: float  # ‖ΔW‖²_F / σ₁(ΔW)²
    shift: Comparison  # against the true shift (θ2 − θ)ᵀ
    target: Comparison  # against what the adapter must learn, θ2ᵀ − W (the shift plus the base's error)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Diagnostics:
        return cls(**{**data, "shift": Comparison(**data["shift"]), "target": Comparison(**data["target"])})


def principal_angles(u1: torch.Tensor, u2: torch.Tensor) -> list[float]:
    """Angles in degrees, ascending, between the spans of the orthonormal columns of u1 and u2."""
    away = u2 - u1 @ (u1.T @ u2)  # the part of span(u2) outside span(u1)
    sines = torch.linalg.svdvals(away).clamp(0.0, 1.0).flip(0)
    return [math.degrees(math.asin(s)) for s in sines.tolist()]


def numerical_rank(sigma: torch.Tensor) -> int:
    return int((sigma > NEGLIGIBLE * sigma[0]).sum()) if sigma.numel() and sigma[0] > 0 else 0


@dataclass(frozen=True)
class Target:
    """A true update T (float64) and its SVD, made once for the many ΔW a sweep compares with it."""

    tensor: torch.Tensor
    u: torch.Tensor
    sigma: torch.Tensor
    vh: torch.Tensor

    @classmethod
    def of(cls, truth: torch.Tensor | Target) -> Target:
        if isinstance(truth, Target):
            return truth
        t = truth.double()
        return cls(t, *torch.linalg.svd(t, full_matrices=False))


def factored_svd(left: torch.Tensor, right: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD of left·right ((d_out, r)·(r, d_in)) from QRs of the factors: O(d·r²)."""
    q_l, r_l = torch.linalg.qr(left.double())
    q_r, r_r = torch.linalg.qr(right.double().T)
    u, sigma, vh = torch.linalg.svd(r_l @ r_r.T)
    return q_l @ u, sigma, vh @ q_r.T


def compare(delta: torch.Tensor, truth: torch.Tensor | Target, k: int, svd=None) -> Comparison:
    """ΔW against T on their top-k singular subspaces (see Comparison); `svd`: ΔW's, when known."""
    target = Target.of(truth)
    delta, truth, tu, t_sigma, tvh = delta.double(), target.tensor, target.u, target.sigma, target.vh
    u, _, vh = svd if svd is not None else torch.linalg.svd(delta, full_matrices=False)
    total = t_sigma.square().sum().item()
    k = min(k, numerical_rank(t_sigma)) if total > 0 else 0
    inside = (u[:, :k].T @ truth @ vh[:k].T).square().sum().item()
    return Comparison(
        relative_error=(torch.linalg.norm(delta - truth) / math.sqrt(total)).item() if total > 0 else math.inf,
        energy_captured=inside / total if total > 0 else 0.0,
        best_energy=t_sigma[:k].square().sum().item() / total if total > 0 else 0.0,
        column_angles=principal_angles(u[:, :k], tu[:, :k]) if k else [],
        row_angles=principal_angles(vh[:k].T, tvh[:k].T) if k else [],
        singular_values=t_sigma[:SHOWN].tolist(),
    )


def diagnose(delta: torch.Tensor, shift: torch.Tensor | Target, target: torch.Tensor | Target, rank: int, factors=None) -> Diagnostics:
    """ΔW against the true shift and against the target, on min(rank, ΔW's own rank) directions.
    `factors` (left, right) with ΔW = left·right make ΔW's SVD cheap (a LoRA's s·B and A)."""
    svd = factored_svd(*factors) if factors is not None else torch.linalg.svd(delta.double(), full_matrices=False)
    sigma = svd[1]
    k = min(rank, numerical_rank(sigma))
    first = sigma[0].item() if sigma.numel() else 0.0
    stable = sigma.square().sum().item() / first**2 if first > 0 else 0.0
    return Diagnostics(k, sigma[:SHOWN].tolist(), stable, compare(delta, shift, k, svd), compare(delta, target, k, svd))
