"""The optimum under weight decay, where it has a closed form (float64).

Weight decay wd coupled into the gradient (Adam's and SGD's `weight_decay`) makes training
minimise J = L + (wd/2)·‖params‖². For LoRA, ΔW = s·B·A, and over every factorisation of one
ΔW, min (‖A‖² + ‖B‖²)/2 = ‖ΔW‖_*/s (balanced factors: A = Σ^½Vᵀ, B = UΣ^½ of ΔW/s). So
the decay is a nuclear-norm penalty λ·‖ΔW‖_* with λ = wd/s, and on the population loss of
isotropic inputs, L(Δ) = σ² + ‖D − Δ‖²/d_out with D = θ2ᵀ − W,

    min over rank ≤ r of  ‖D − Δ‖²/d_out + λ·‖Δ‖_*  is  Δ* = Σ_{i≤r} max(dᵢ − λ·d_out/2, 0)·uᵢvᵢᵀ

(each singular value separately: d/dδ [(δ − d)²/d_out + λδ] = 0 at δ = d − λ·d_out/2; the
largest dᵢ gain most, so the rank limit keeps the top r). Full fine-tuning decays W' = W + Δ
itself: min ‖D − Δ‖²/d_out + (wd/2)·‖W + Δ‖² is Δ* = (D − c·W)/(1 + c), c = wd·d_out/2.

Anisotropic inputs (L = ‖(D − Δ)·Σ^½‖²/d_out) have no such closed form: the nuclear norm of
Δ is not that of Δ·Σ^½. AdamW's decoupled decay is not the gradient of any fixed penalty once
Adam rescales the gradient, so its fixed points need not be Δ* at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Penalised:
    """A point's population loss, its penalty and their sum J = loss + penalty."""

    loss: float
    penalty: float
    rank: int | None = None  # the optimum's rank (singular values above zero)
    singular_values: tuple[float, ...] = ()  # the optimum's nonzero singular values, when it is the nuclear-norm one

    @property
    def objective(self) -> float:
        return self.loss + self.penalty

    def to_dict(self) -> dict[str, float | int | list[float] | None]:
        return {"loss": self.loss, "penalty": self.penalty, "objective": self.objective, "rank": self.rank, "singular_values": list(self.singular_values)}


def population_loss(d: torch.Tensor, delta: torch.Tensor, noise_std: float) -> float:
    """σ² + ‖D − Δ‖²/d_out: the expected MSE on fresh x ~ N(0, I)."""
    return noise_std**2 + ((d.double() - delta.double()) ** 2).sum().item() / d.shape[0]


def nuclear_optimum(d: torch.Tensor, lam: float, rank: int, noise_std: float) -> tuple[torch.Tensor, Penalised]:
    """Δ* (rank ≤ `rank`) minimising σ² + ‖D − Δ‖²/d_out + lam·‖Δ‖_*, and its loss and penalty."""
    u, sigma, vt = torch.linalg.svd(d.double(), full_matrices=False)
    kept = (sigma[:rank] - lam * d.shape[0] / 2).clamp_min(0.0)
    delta = (u[:, :rank] * kept) @ vt[:rank]
    values = tuple(v for v in kept.tolist() if v > 0)
    return delta, Penalised(population_loss(d, delta, noise_std), lam * kept.sum().item(), len(values), values)


def ridge_optimum(d: torch.Tensor, w: torch.Tensor, weight_decay: float, noise_std: float) -> tuple[torch.Tensor, Penalised]:
    """Full fine-tuning's Δ* minimising σ² + ‖D − Δ‖²/d_out + (wd/2)·‖W + Δ‖², and its loss and penalty."""
    c = weight_decay * d.shape[0] / 2
    delta = (d.double() - c * w.double()) / (1 + c)
    penalty = weight_decay / 2 * ((w.double() + delta) ** 2).sum().item()
    return delta, Penalised(population_loss(d, delta, noise_std), penalty, None)
