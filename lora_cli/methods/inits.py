"""How the LoRA family's factors start: the adapter init registry.

An adapter init sees the base weight W (d_out, d_in) and returns (lora_A, lora_B, W to
freeze). Every entry keeps W + s·B₀·A₀ = W at step 0: the random ones by B₀ = 0 (or, for
orthogonal, B₀·A₀ = 0), PiSSA and OLoRA by freezing the residual W − s·B₀·A₀ instead of W.
The names and formulas are PEFT's (peft/tuners/lora/layer.py, checked against 0.21.2),
except `normal`, the blog's, and `milora`, MiLoRA's reference code (PEFT has none).

torch is imported inside the functions: config validation reads the registry's names and
help without paying for torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lora_cli.methods.spec import AdapterSpec

if TYPE_CHECKING:
    import torch

AdapterInit = Callable[["torch.Tensor", AdapterSpec, "torch.Generator"], "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"]


def _zeros_b(w: torch.Tensor, spec: AdapterSpec) -> torch.Tensor:
    import torch

    return torch.zeros(w.shape[0], spec.rank)


def _normal(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    return torch.empty(spec.rank, w.shape[1]).normal_(0.0, 1.0, generator=g), _zeros_b(w, spec), w


def _kaiming(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    # PEFT's default (init_lora_weights=True): kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(d_in), 1/sqrt(d_in))
    a = torch.nn.init.kaiming_uniform_(torch.empty(spec.rank, w.shape[1]), a=math.sqrt(5), generator=g)
    return a, _zeros_b(w, spec), w


def _gaussian(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    # PEFT's "gaussian": std 1/r (not 1/sqrt(r))
    return torch.empty(spec.rank, w.shape[1]).normal_(0.0, 1.0 / spec.rank, generator=g), _zeros_b(w, spec), w


def _orthogonal(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    r, (d_out, d_in) = spec.rank, w.shape
    if r % 2:
        raise ValueError(f"the orthogonal init needs an even rank, got {r}")
    q, _ = torch.linalg.qr(torch.randn(r, r, generator=g))
    a = (torch.randn(d_in, r // 2, generator=g) @ q[0::2]).T / 10.0  # A's rows lie in the span of q's even-indexed rows,
    b = torch.randn(r // 2, d_out, generator=g).T @ q[1::2] / 10.0  # B's columns pair with the odd ones: B·A = 0
    return a.contiguous(), b.contiguous(), w


def _pissa(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    # W = U·diag(S)·Vᵀ in float32; S' = S[:r]/s; A = diag(√S')·Vᵀ[:r], B = U[:, :r]·diag(√S'): s·B·A is W's top-r part
    u, sigma, vh = torch.linalg.svd(w.float(), full_matrices=False)
    root = (sigma[: spec.rank] / spec.scaling).sqrt()
    a, b = root[:, None] * vh[: spec.rank], u[:, : spec.rank] * root
    return a.contiguous(), b.contiguous(), w - spec.scaling * (b @ a)


def _milora(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    # MiLoRA (Wang et al. 2024; its reference code's pissa_init on the minor components): PiSSA on
    # W's bottom r singular triplets, A = diag(√S')·Vᵀ[-r:], B = U[:, -r:]·diag(√S'), S' = S[-r:]/s
    u, sigma, vh = torch.linalg.svd(w.float(), full_matrices=False)
    root = (sigma[-spec.rank :] / spec.scaling).sqrt()
    a, b = root[:, None] * vh[-spec.rank :], u[:, -spec.rank :] * root
    return a.contiguous(), b.contiguous(), w - spec.scaling * (b @ a)


def _olora(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    q, r_factor = torch.linalg.qr(w.float())  # B = Q[:, :r], A = R[:r], no division by s (as PEFT)
    a, b = r_factor[: spec.rank].contiguous(), q[:, : spec.rank].contiguous()
    return a, b, w - spec.scaling * (b @ a)


@dataclass(frozen=True)
class InitEntry:
    fn: AdapterInit
    help: str
    peft: bool | str  # PEFT's init_lora_weights for it (True is PEFT's default, kaiming)
    changes_base: bool = False  # freezes W − s·B₀·A₀ instead of W


INITS: dict[str, InitEntry] = {
    "normal": InitEntry(_normal, "lora_A ~ N(0, 1), lora_B = 0 (the blog's)", True),
    "kaiming": InitEntry(_kaiming, "lora_A ~ U(±1/√d_in) (PEFT's default), lora_B = 0", True),
    "gaussian": InitEntry(_gaussian, "lora_A ~ N(0, 1/r²) (PEFT's gaussian), lora_B = 0", "gaussian"),
    "orthogonal": InitEntry(_orthogonal, "A, B from one orthogonal matrix with B·A = 0 (PEFT's; even rank)", "orthogonal"),
    "pissa": InitEntry(_pissa, "A, B from W's top-r singular triplets, the residual frozen (PEFT's pissa)", "pissa", True),
    "olora": InitEntry(_olora, "A, B from W's QR factors, the residual frozen (PEFT's olora)", "olora", True),
    "milora": InitEntry(_milora, "A, B from W's bottom-r singular triplets, the residual frozen (MiLoRA: PiSSA on the minor components)",
                        True, True),
}


def init_adapter(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lora_A (r, d_in), lora_B (d_out, r), the base weight to freeze), all on the CPU.

    Raises:
        ValueError: for an init not in INITS.
    """
    if spec.init not in INITS:
        raise ValueError(f"unknown adapter init {spec.init!r}; known: {', '.join(INITS)}")
    return INITS[spec.init].fn(w, spec, g)
