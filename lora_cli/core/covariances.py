"""Input covariances: a registry, one entry a spectrum shape, and the directions it lies along.

Inputs are x ~ N(0, Σ) with Σ = U·diag(λ)·Uᵀ, drawn as x = z·diag(√λ)·Uᵀ from z ~ N(0, I).
The spectrum λ is scaled so that tr Σ = d_in (the same total input power as the isotropic
default), and U is the base θ's left singular vectors (`top`: the strongest input directions
are the ones θ uses most; `bottom`: the ones it uses least) or a random orthonormal basis.
`isotropic` is Σ = I, drawn as z itself, so its data are byte-identical to before this existed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # not imported: config validation reads the registries' names without torch
    import torch


@dataclass(frozen=True)
class CovarianceSpec:
    kind: str = "isotropic"
    decay: float = 1.0  # power_law: λᵢ ∝ i^-decay
    spikes: int = 1  # spiked: how many strong directions
    strength: float = 10.0  # spiked: their λ, against 1 for the others (before scaling to tr Σ = d_in)
    align: str = "random"  # the directions: top, bottom or random


class Kind(NamedTuple):
    spectrum: Callable[[CovarianceSpec, int], "torch.Tensor"] | None  # None: isotropic, Σ = I
    help: str


def _power_law(spec: CovarianceSpec, d: int) -> torch.Tensor:
    import torch

    return torch.arange(1, d + 1, dtype=torch.float64) ** -spec.decay


def _spiked(spec: CovarianceSpec, d: int) -> torch.Tensor:
    import torch

    lam = torch.ones(d, dtype=torch.float64)
    lam[: min(spec.spikes, d)] = spec.strength
    return lam


COVARIANCES: dict[str, Kind] = {
    "isotropic": Kind(None, "x ~ N(0, I), the blog's"),
    "power_law": Kind(_power_law, "eigenvalues ∝ i^-decay"),
    "spiked": Kind(_spiked, "`spikes` directions at `strength`, the rest at 1"),
}
ALIGNS = {
    "random": "a random orthonormal basis (from the seed)",
    "top": "the strongest input directions along θ's top left singular vectors",
    "bottom": "the strongest input directions along θ's bottom left singular vectors",
}


class Covariance(NamedTuple):
    """Σ = U·diag(λ)·Uᵀ in float64: its eigenvalues (descending as U's columns go) and basis."""

    eigenvalues: torch.Tensor  # (d,)
    basis: torch.Tensor  # (d, d), orthonormal columns

    def matrix(self) -> torch.Tensor:
        return (self.basis * self.eigenvalues) @ self.basis.T

    def sqrt(self) -> torch.Tensor:
        """Σ^½, symmetric: population losses of ΔW are ‖(D − ΔW)·Σ^½‖²."""
        return (self.basis * self.eigenvalues.sqrt()) @ self.basis.T

    def factor(self) -> torch.Tensor:
        """L (d, d) in float32 with x = z·L ~ N(0, Σ) for z ~ N(0, I)."""
        return (self.eigenvalues.sqrt()[:, None] * self.basis.T).float()


def covariance(spec: CovarianceSpec, theta: torch.Tensor, g: torch.Generator) -> Covariance | None:
    """Σ for inputs to θ (d_in, d_out); None for isotropic inputs (Σ = I, drawn as they were)."""
    import torch

    kind = COVARIANCES[spec.kind]
    if kind.spectrum is None:
        return None
    d = theta.shape[0]
    lam = kind.spectrum(spec, d)
    lam = lam * (d / lam.sum())  # tr Σ = d: the isotropic total power
    if spec.align == "random":
        basis, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        basis = basis * torch.sign(torch.diagonal(r))  # a Haar-distributed basis, not QR's sign convention
    else:
        u, _, _ = torch.linalg.svd(theta.double(), full_matrices=True)  # (d, d), columns by θ's singular values
        basis = u if spec.align == "top" else u.flip(1)
    return Covariance(lam, basis)
