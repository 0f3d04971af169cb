"""How θ changes between pretraining and finetuning: a registry, one entry a kind.

A shift maps (θ (d_in, d_out), its spec, a generator) to θ2. The true update a finetune
should find is then ΔW* = (θ2 − θ)ᵀ in weight layout (d_out, d_in); figures draw it and
the optima (issue 11) start from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # not imported: config validation reads SHIFTS' names without torch
    import torch


@dataclass(frozen=True)
class ShiftSpec:
    kind: str = "add"
    value: float = 1.0  # the size of the change (each kind's entry says how)
    rank: int = 1  # lowrank: how many rank-1 terms
    decay: float = 0.5  # lowrank: each term's singular value is `decay` times the one before
    align: str = "random"  # lowrank: its directions, random or θ's own top or bottom singular vectors (ALIGNS)


ALIGNS = {"random": "random orthonormal directions", "top": "θ's top singular vectors (the base's strongest directions)",
          "bottom": "θ's bottom singular vectors (its weakest)"}


Shift = Callable[["torch.Tensor", ShiftSpec, "torch.Generator | None"], "torch.Tensor"]


def _add(theta: torch.Tensor, spec: ShiftSpec, g: torch.Generator | None) -> torch.Tensor:
    return theta + spec.value  # every entry moves by value: ΔW* = value·1·1ᵀ, rank 1


def _scale(theta: torch.Tensor, spec: ShiftSpec, g: torch.Generator | None) -> torch.Tensor:
    return theta * spec.value  # ΔW* = (value − 1)·θᵀ: full rank, θ's own spectrum


def _lowrank(theta: torch.Tensor, spec: ShiftSpec, g: torch.Generator | None) -> torch.Tensor:
    import torch

    d_in, d_out = theta.shape
    if spec.align == "random":
        u, _ = torch.linalg.qr(torch.randn(d_in, spec.rank, generator=g, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(d_out, spec.rank, generator=g, dtype=torch.float64))
    else:  # θ's own singular pairs: θ = U·S·Vᵀ, its top or bottom `rank` of them
        left, _, right_t = torch.linalg.svd(theta.double(), full_matrices=False)
        part = slice(None, spec.rank) if spec.align == "top" else slice(-spec.rank, None)
        u, v = left[:, part], right_t[part].T
    sigma = spec.value * (d_in * d_out) ** 0.5 * spec.decay ** torch.arange(spec.rank, dtype=torch.float64)
    return theta + ((u * sigma) @ v.T).to(theta.dtype)  # ΔW*'s singular values are exactly `sigma`


def _random(theta: torch.Tensor, spec: ShiftSpec, g: torch.Generator | None) -> torch.Tensor:
    import torch

    return theta + spec.value * torch.randn(theta.shape, generator=g, dtype=theta.dtype)  # full rank, flat spectrum


class ShiftKind(NamedTuple):
    fn: Shift
    help: str
    none: float = 0.0  # the value at which this kind leaves θ as it is


def unchanged(kind: str, value: float) -> bool:
    """True when a shift of `kind` by `value` leaves θ2 = θ (nothing for an adapter to learn)."""
    return value == SHIFTS[kind].none


SHIFTS: dict[str, ShiftKind] = {
    "add": ShiftKind(_add, "θ2 = θ + value (a rank-1 change, the blog's)"),
    "scale": ShiftKind(_scale, "θ2 = value·θ (full rank: θ's own spectrum)", none=1.0),
    "lowrank": ShiftKind(
        _lowrank,
        "θ2 = θ + rank orthogonal rank-1 terms (random, or θ's own top or bottom directions: shift.align) with singular values "
        "value·√(d_in·d_out)·decayⁱ",
    ),
    "random": ShiftKind(_random, "θ2 = θ + value·N(0, 1) (full rank, a flat spectrum)"),
}


def shift_theta(theta: torch.Tensor, spec: ShiftSpec, g: torch.Generator | None = None) -> torch.Tensor:
    """θ2 for the finetune data. Raises ValueError for an unknown kind."""
    if spec.kind not in SHIFTS:
        raise ValueError(f"unknown shift kind {spec.kind!r}; known: {', '.join(SHIFTS)}")
    return SHIFTS[spec.kind].fn(theta, spec, g)


def true_delta(theta: torch.Tensor, theta2: torch.Tensor) -> torch.Tensor:
    """ΔW* = (θ2 − θ)ᵀ, shape (d_out, d_in): the update that makes the base exact again."""
    return (theta2 - theta).T.contiguous()
