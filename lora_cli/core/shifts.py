"""How θ changes between pretraining and finetuning: a registry, one entry a kind.

A shift maps (θ (d_in, d_out), its spec, a generator) to θ2. The true update a finetune
should find is then ΔW* = (θ2 − θ)ᵀ in weight layout (d_out, d_in); figures draw it and
the optima (issue 11) start from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not imported: config validation reads SHIFTS' names without torch
    import torch


@dataclass(frozen=True)
class ShiftSpec:
    kind: str = "add"
    value: float = 1.0


Shift = Callable[["torch.Tensor", ShiftSpec, "torch.Generator | None"], "torch.Tensor"]


def _add(theta: torch.Tensor, spec: ShiftSpec, g: torch.Generator | None) -> torch.Tensor:
    return theta + spec.value  # every entry moves by value: ΔW* = value·1·1ᵀ, rank 1


SHIFTS: dict[str, tuple[Shift, str]] = {
    "add": (_add, "θ2 = θ + value (a rank-1 change)"),
}


def shift_theta(theta: torch.Tensor, spec: ShiftSpec, g: torch.Generator | None = None) -> torch.Tensor:
    """θ2 for the finetune data. Raises ValueError for an unknown kind."""
    if spec.kind not in SHIFTS:
        raise ValueError(f"unknown shift kind {spec.kind!r}; known: {', '.join(SHIFTS)}")
    return SHIFTS[spec.kind][0](theta, spec, g)


def true_delta(theta: torch.Tensor, theta2: torch.Tensor) -> torch.Tensor:
    """ΔW* = (θ2 − θ)ᵀ, shape (d_out, d_in): the update that makes the base exact again."""
    return (theta2 - theta).T.contiguous()
