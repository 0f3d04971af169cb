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
TOP_K, EPSILON = 10, 0.5  # intruder dimensions: PEFT's reduce_intruder_dimension defaults (Shuttleworth et al.)
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
    rank_90: int | None = None  # how many of ΔW's singular values hold 90 % of ‖ΔW‖²_F (Biderman et al.)
    intruders: int | None = None  # W + ΔW's top-10 left singular vectors with |cos| < 0.5 to every one of W's
    optimum_intruders: int | None = None  # the same for W + the best update of its kind (the adapter's rank; full: any)
    optimum_column_angle: float | None = None  # degrees: the largest principal angle between ΔW's top-k column space and that best update's
    optimum_row_angle: float | None = None  # the same for the row spaces

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


@dataclass(frozen=True)
class Base:
    """The frozen base W (float64) and its left singular vectors, made once for a run or a group."""

    weight: torch.Tensor
    basis: torch.Tensor  # (d_out, min(d_out, d_in)), by descending singular value
    norm: float = 0.0  # σ₁(W)

    @classmethod
    def of(cls, weight: torch.Tensor | Base) -> Base:
        if isinstance(weight, Base):
            return weight
        values, basis = _left_eigen(weight)
        return cls(weight.double(), basis, values[0].clamp_min(0.0).sqrt().item())  # σ₁² is W·Wᵀ's top eigenvalue


def left_basis(weight: torch.Tensor) -> torch.Tensor:
    """W's left singular vectors, σ descending: the eigenvectors of W·Wᵀ (float64), the top
    min(d_out, d_in) of them (PEFT's svd(full_matrices=False) has as many)."""
    return _left_eigen(weight)[1]


def _left_eigen(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(σᵢ², uᵢ) of W, descending: W·Wᵀ's eigenvalues and eigenvectors, the top min(d_out, d_in)."""
    w = weight.double()
    values, vectors = torch.linalg.eigh(w @ w.T)
    keep = min(w.shape)
    return values.flip(0)[:keep], vectors.flip(1)[:, :keep]


def intruders(base: Base, merged: torch.Tensor, top_k: int = TOP_K, epsilon: float = EPSILON) -> int:
    """Intruder dimensions (Shuttleworth et al.; PEFT's reduce_intruder_dimension): among W′'s
    top-k left singular vectors, those whose largest |cos| with any of W's is below ε."""
    top = left_basis(merged)[:, :top_k]
    return int(((top.T @ base.basis).abs().max(dim=1).values < epsilon).sum())


def rank_90(sigma: torch.Tensor) -> int:
    """The fewest singular values that hold 90 % of Σσᵢ² (0 for a zero update)."""
    energy = sigma.double().square()
    if energy.sum() <= 0:
        return 0
    return int((torch.cumsum(energy, 0) < 0.9 * energy.sum()).sum()) + 1


def _angles_to(svd: tuple, k: int, best_svd: tuple) -> dict[str, float]:
    """The largest principal angles between ΔW's top-k column and row spaces (its `svd`) and
    those of the best update (its thin SVD), on as many directions as both have; none for a zero ΔW."""
    bu, b_sigma, bvh = best_svd
    k = min(k, numerical_rank(b_sigma))
    if k == 0:
        return {}
    u, _, vh = svd
    return {"optimum_column_angle": principal_angles(u[:, :k], bu[:, :k])[-1], "optimum_row_angle": principal_angles(vh[:k].T, bvh[:k].T)[-1]}


def best_update(target: Target, rank: int | None, half: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple]:
    """The rank-r ΔW with the least expected loss on fresh x ~ N(0, Σ), Σ = half² (None: I):
    [D·Σ^½]_r·Σ^-½, D the target; for Σ = I the target's truncated SVD; rank None: D itself.
    With its thin SVD, read off the target's or (Σ ≠ I) from its rank-r factors."""
    if rank is None:
        return target.tensor, (target.u, target.sigma, target.vh)
    if half is None:
        u, sigma, vh = target.u[:, :rank], target.sigma[:rank], target.vh[:rank]
        return (u * sigma) @ vh, (u, sigma, vh)
    u, sigma, vh = torch.linalg.svd(target.tensor @ half.double(), full_matrices=False)
    left, right = u[:, :rank] * sigma[:rank], vh[:rank] @ torch.linalg.inv(half.double())
    return left @ right, factored_svd(left, right)


def diagnose(delta: torch.Tensor, shift: torch.Tensor | Target, target: torch.Tensor | Target, rank: int, factors=None,
             base: torch.Tensor | Base | None = None, half: torch.Tensor | None = None, full: bool = False) -> Diagnostics:
    """ΔW against the true shift and against the target, on min(rank, ΔW's own rank) directions.
    `factors` (left, right) with ΔW = left·right make ΔW's SVD cheap (a LoRA's s·B and A). With
    the frozen `base`, the intruder dimensions of W + ΔW and of W + the best update of its kind on
    fresh rows of covariance half² (None: I): of rank `rank`, or any (`full` fine-tuning)."""
    svd = factored_svd(*factors) if factors is not None else torch.linalg.svd(delta.double(), full_matrices=False)
    sigma = svd[1]
    k = min(rank, numerical_rank(sigma))
    base = Base.of(base) if base is not None else None
    if base is not None and sigma.numel() and sigma[0] < NEGLIGIBLE * base.norm:
        k = 0  # ΔW is W's float32 rounding (an update that starts at 0, measured at step 0): no directions to compare
    first = sigma[0].item() if sigma.numel() else 0.0
    stable = sigma.square().sum().item() / first**2 if first > 0 else 0.0
    counts = {}
    if base is not None:
        truth = Target.of(target)
        best, best_svd = best_update(truth, None if full else rank, half)
        counts = {"intruders": intruders(base, base.weight + delta.double()), "optimum_intruders": intruders(base, base.weight + best),
                  **_angles_to(svd, k, best_svd)}
        target = truth
    return Diagnostics(k, sigma[:SHOWN].tolist(), stable, compare(delta, shift, k, svd), compare(delta, target, k, svd),
                       rank_90=rank_90(sigma), **counts)
