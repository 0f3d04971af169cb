"""How the LoRA family's factors start: the adapter init registry.

An adapter init sees the base weight W (d_out, d_in), and a data-aware one also what its entry
`reads` of InitData (the first full gradient ∇_W L at W on the finetune rows, or the finetune
or pretraining inputs), and returns (lora_A, lora_B, W to freeze). Every entry but LoRA-One
keeps W + s·B₀·A₀ = W at step 0: the random ones by B₀ = 0 (or, for orthogonal, B₀·A₀ = 0),
the rest by freezing the residual W − s·B₀·A₀ instead of W. LoRA-One starts one gradient
step away from W, as its paper does.
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

@dataclass(frozen=True)
class InitData:
    """What a data-aware init reads, each made only when asked for (the recipes supply them)."""

    gradient: Callable[[], torch.Tensor]  # ∇_W L at the base W on every finetune row, (d_out, d_in)
    target_inputs: Callable[[], torch.Tensor]  # the finetune rows' inputs X2 (n, d_in)
    source_inputs: Callable[[], torch.Tensor]  # the pretraining rows' inputs X (n, d_in)


# (W, spec, generator, the data it reads or None) -> (lora_A, lora_B, W to freeze)
AdapterInit = Callable[["torch.Tensor", AdapterSpec, "torch.Generator", "InitData | None"], "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"]


def _zeros_b(w: torch.Tensor, spec: AdapterSpec) -> torch.Tensor:
    import torch

    return torch.zeros(w.shape[0], spec.rank)


def _normal(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    import torch

    return torch.empty(spec.rank, w.shape[1]).normal_(0.0, 1.0, generator=g), _zeros_b(w, spec), w


def _kaiming(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    import torch

    # PEFT's default (init_lora_weights=True): kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(d_in), 1/sqrt(d_in))
    a = torch.nn.init.kaiming_uniform_(torch.empty(spec.rank, w.shape[1]), a=math.sqrt(5), generator=g)
    return a, _zeros_b(w, spec), w


def _gaussian(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    import torch

    # PEFT's "gaussian": std 1/r (not 1/sqrt(r))
    return torch.empty(spec.rank, w.shape[1]).normal_(0.0, 1.0 / spec.rank, generator=g), _zeros_b(w, spec), w


def _orthogonal(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    import torch

    r, (d_out, d_in) = spec.rank, w.shape
    if r % 2:
        raise ValueError(f"the orthogonal init needs an even rank, got {r}")
    q, _ = torch.linalg.qr(torch.randn(r, r, generator=g))
    a = (torch.randn(d_in, r // 2, generator=g) @ q[0::2]).T / 10.0  # A's rows lie in the span of q's even-indexed rows,
    b = torch.randn(r // 2, d_out, generator=g).T @ q[1::2] / 10.0  # B's columns pair with the odd ones: B·A = 0
    return a.contiguous(), b.contiguous(), w


def _singular_part(top: bool):
    """PiSSA (top: W's top-r singular triplets, PEFT's pissa) or MiLoRA (its bottom r; Wang et al.
    2024, its reference code's pissa_init on the minor components): from W = U·diag(S)·Vᵀ in
    float32 and S' = S[part]/s, A = diag(√S')·Vᵀ[part], B = U[:, part]·diag(√S'), so that s·B·A
    is that part of W, and the residual W − s·B·A is frozen."""

    def init(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
        import torch

        part = slice(None, spec.rank) if top else slice(-spec.rank, None)
        u, sigma, vh = torch.linalg.svd(w.float(), full_matrices=False)
        root = (sigma[part] / spec.scaling).sqrt()
        a, b = root[:, None] * vh[part], u[:, part] * root
        return a.contiguous(), b.contiguous(), w - spec.scaling * (b @ a)

    return init


def _olora(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    import torch

    q, r_factor = torch.linalg.qr(w.float())  # B = Q[:, :r], A = R[:r], no division by s (as PEFT)
    a, b = r_factor[: spec.rank].contiguous(), q[:, : spec.rank].contiguous()
    return a, b, w - spec.scaling * (b @ a)


def _lora_one(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    import torch

    # LoRA-One (Zhang et al. 2025; its reference code's gradient_reinit, with an exact SVD): from
    # −∇_W L = U·diag(S)·Vᵀ, B = U[:, :r]·diag(√S[:r])/√S₀, A = diag(√S[:r])·Vᵀ[:r]/√S₀, both / √γ.
    # W stays frozen as it is: the model starts one best rank-r gradient step away from W.
    u, sigma, vh = torch.linalg.svd(-data.gradient().double(), full_matrices=False)
    root = sigma[: spec.rank].sqrt() / (sigma[0].sqrt() * math.sqrt(spec.gamma))
    return (root[:, None] * vh[: spec.rank]).float().contiguous(), (u[:, : spec.rank] * root).float().contiguous(), w


def _seeded_lowrank(grad: torch.Tensor, r: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.svd_lowrank as PEFT's LoRA-GA calls it (q = min(4r, min(shape)), 4 power iterations),
    its random draws seeded from `g` without touching torch's global stream."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(2**62, (), generator=g)))
        return torch.svd_lowrank(grad, q=min(4 * r, min(grad.shape)), niter=4)


def _corda(inputs: str, top: bool):
    """CorDA (Yang et al. 2024; PEFT's collect_eigens_for_layer, crop_corda_eigens and corda_init):
    C = XᵀX of the inputs scaled by |max X| (PEFT's hook on one batch of every row), damped by
    0.01·mean(diag C) (doubled until the inverse is good), W·C = U·S·Vhᵀ, V = (Vh·C⁻¹)ᵀ; the top r
    triplets (ipm, the finetune inputs) or the bottom r (kpm, the pretraining inputs to keep);
    S/s; A = √S·Vᵀ, B = U·√S, the residual W − s·B·A frozen."""

    def init(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
        import torch

        x = getattr(data, inputs)().float()
        x = x / torch.max(x).abs()
        cov = x.t().matmul(x)
        damp = 0.01
        while True:
            fixed = cov + torch.diag(torch.ones(cov.size(0)) * torch.mean(torch.diag(cov)) * damp)
            cov_inv = torch.linalg.inv(fixed)
            if torch.dist(fixed @ cov_inv, torch.eye(cov.size(0))).item() < 0.05:
                break
            damp *= 2
        u, sigma, vh = torch.linalg.svd(w.float() @ fixed, full_matrices=False)
        v = (vh @ cov_inv).transpose(0, 1)
        part = slice(None, spec.rank) if top else slice(-spec.rank, None)
        u, sigma, v = u[:, part], sigma[part] / spec.scaling, v[:, part]
        a, b = v.t().mul(sigma.sqrt().view(-1, 1)).contiguous(), u.mul(sigma.sqrt()).contiguous()
        return a, b, w - spec.scaling * b @ a

    return init


def _eva(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    import torch

    # EVA (Paischer et al. 2024; PEFT's eva with rho 1): lora_A = the top-r principal directions of the
    # finetune inputs (PCA: the centered rows' top right singular vectors, unit rows), lora_B = 0
    x = data.target_inputs().double()
    _, _, vh = torch.linalg.svd(x - x.mean(dim=0), full_matrices=False)
    return vh[: spec.rank].float().contiguous(), _zeros_b(w, spec), w


def _lora_ga(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    import torch

    # PEFT's lora_ga_init, direction "ArB2r", scale "stable": from ∇_W L ≈ U·diag(S)·Vᵀ (torch.svd_lowrank,
    # q = min(4r, min(shape)), niter 4, seeded from `g`), A = Vᵀ[:r], B = U[:, r:2r]·diag(S[r:2r])·d_out^¼/√γ
    r, d_out = spec.rank, w.shape[0]
    u, sigma, v = _seeded_lowrank(data.gradient().float(), r, g)
    a = v.t()[:r].contiguous()
    b = (u[:, r : 2 * r] @ torch.diag(sigma[r : 2 * r]) * (d_out**0.25 / spec.gamma**0.5)).contiguous()
    return a, b, w - spec.scaling * (b.float() @ a.float())


def _lora_ga_paper(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None):
    # The LoRA-GA paper's reference code (Wang et al. 2024), where it differs from PEFT's: B = U[:, r:2r]
    # without the singular values, and the stable scale d_out^¼/√γ on both factors; the same seeded SVD
    r, d_out = spec.rank, w.shape[0]
    u, _, v = _seeded_lowrank(data.gradient().float(), r, g)
    scale = d_out**0.25 / spec.gamma**0.5
    a, b = (v.t()[:r] * scale).contiguous(), (u[:, r : 2 * r] * scale).contiguous()
    return a, b, w - spec.scaling * (b @ a)


@dataclass(frozen=True)
class InitEntry:
    fn: AdapterInit
    help: str
    peft: bool | str  # PEFT's init_lora_weights for it (True is PEFT's default, kaiming)
    changes_base: bool = False  # freezes W − s·B₀·A₀ instead of W
    reads: str | None = None  # the InitData field it reads (None: no data)
    starts_at_base: bool = True  # W_frozen + s·B₀·A₀ = W (False: the model starts off the base, as LoRA-One does)
    spans: int = 1  # it reads the top spans·r singular triplets: spans·rank ≤ min(d_in, d_out)


INITS: dict[str, InitEntry] = {
    "normal": InitEntry(_normal, "lora_A ~ N(0, 1), lora_B = 0 (the blog's)", True),
    "kaiming": InitEntry(_kaiming, "lora_A ~ U(±1/√d_in) (PEFT's default), lora_B = 0", True),
    "gaussian": InitEntry(_gaussian, "lora_A ~ N(0, 1/r²) (PEFT's gaussian), lora_B = 0", "gaussian"),
    "orthogonal": InitEntry(_orthogonal, "A, B from one orthogonal matrix with B·A = 0 (PEFT's; even rank)", "orthogonal"),
    "pissa": InitEntry(_singular_part(top=True), "A, B from W's top-r singular triplets, the residual frozen (PEFT's pissa)", "pissa", True),
    "olora": InitEntry(_olora, "A, B from W's QR factors, the residual frozen (PEFT's olora)", "olora", True),
    "lora_one": InitEntry(_lora_one, "A, B from the top-r SVD of the first full gradient, W kept: one best rank-r gradient step, "
                          "scaled by 1/√(γ·S₀) (LoRA-One)", True, reads="gradient", starts_at_base=False),
    "lora_ga": InitEntry(_lora_ga, "A, B from the first full gradient's singular vectors r:2r and :r, the residual frozen "
                         "(PEFT's lora_ga, ArB2r, stable scale γ)", True, True, reads="gradient", spans=2),
    "lora_ga_paper": InitEntry(_lora_ga_paper, "as lora_ga, but as the LoRA-GA paper's code: B without the singular values, "
                               "the stable scale on both factors", True, True, reads="gradient", spans=2),
    "eva": InitEntry(_eva, "lora_A = the top-r principal directions of the finetune inputs, lora_B = 0 (PEFT's eva, rho 1)", True,
                     reads="target_inputs"),
    "corda_ipm": InitEntry(_corda("target_inputs", True), "A, B from the top r of W·C, C the finetune inputs' covariance, the "
                           "residual frozen (PEFT's corda, instruction-previewed)", True, True, reads="target_inputs"),
    "corda_kpm": InitEntry(_corda("source_inputs", False), "A, B from the bottom r of W·C, C the pretraining inputs' covariance, "
                           "the residual frozen (PEFT's corda, knowledge-preserved)", True, True, reads="source_inputs"),
    "milora": InitEntry(_singular_part(top=False), "A, B from W's bottom-r singular triplets, the residual frozen (MiLoRA: PiSSA on the minor components)",
                        True, True),
}


def init_adapter(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: InitData | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lora_A (r, d_in), lora_B (d_out, r), the base weight to freeze), all on the CPU.
    `data`: what a data-aware init reads (its entry's `reads`).

    Raises:
        ValueError: for an init not in INITS, or a data-aware init without `data`.
    """
    if spec.init not in INITS:
        raise ValueError(f"unknown adapter init {spec.init!r}; known: {', '.join(INITS)}")
    if INITS[spec.init].reads and data is None:
        raise ValueError(f"the {spec.init} init needs data: {INITS[spec.init].reads.replace('_', ' ')}")
    return INITS[spec.init].fn(w, spec, g, data)
