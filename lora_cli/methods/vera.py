"""VeRA (Kopiczko et al. 2024; PEFT's VeRA): a frozen random pair A (r, d_in), B (d_out, r)
drawn as PEFT draws them, and two trained scaling vectors, λ_d (r) and λ_b (d_out):

    ΔW = (λ_b ⊙ B)·(λ_d ⊙ A)        (rows of B scaled by λ_b, rows of A by λ_d; no alpha)

starting at λ_b = 0, λ_d = 0.1 (PEFT's d_initial), so ΔW = 0 at step 0. ΔW is bilinear in
(λ_b, λ_d): no closed form, but each half is a least-squares problem, so the optimum here is
the least that alternating least squares finds from the start and from 8 seeded random points,
in float64 on the data's moments (the best found, not a proven minimum). It exports in PEFT's VeRA format, projections saved.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lora_cli.methods.method import Method, Params
from lora_cli.methods.spec import MODULE, AdapterSpec

if TYPE_CHECKING:
    import torch

    from lora_cli.core.moments import Residual

KEY_LB, KEY_LD = f"base_model.model.{MODULE}.vera_lambda_b", f"base_model.model.{MODULE}.vera_lambda_d"
KEY_VA, KEY_VB = "base_model.vera_A", "base_model.vera_B"  # PEFT's shared projections, saved beside the vectors
D_INITIAL = 0.1
SWEEPS = 500  # alternating least-squares rounds at most; each lowers the loss


def kaiming(shape: tuple[int, int], g: torch.Generator) -> torch.Tensor:
    """PEFT's VeRA _kaiming_init: U(±√3·√2/√fan_in), fan_in = shape[1], drawn from `g`."""
    import torch

    bound = math.sqrt(3.0) * math.sqrt(2) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=g)


def projections(key: int, rank: int, d_in: int, d_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """vera_A (r, d_in) and vera_B (d_out, r) as PEFT makes them from projection_prng_key `key`."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(key)
    return kaiming((rank, d_in), g), kaiming((d_out, rank), g)


def vera_delta(params: Params) -> torch.Tensor:
    return (params[KEY_LB][:, None] * params[KEY_VB]) @ (params[KEY_LD][:, None] * params[KEY_VA])


RESTARTS = 8  # the loss is not convex in (λ_b, λ_d): alternating least squares from the start and from these many seeded random points


def alternating_floor(gram: torch.Tensor, cross: torch.Tensor, rr: float, numel: int, params: Params) -> float:
    """min over (λ_b, λ_d) of ‖R − X·ΔWᵀ‖²/numel, the least that alternating least squares finds
    from `params`' start and from RESTARTS seeded random points, from the moments XᵀX (`gram`),
    XᵀR (`cross`) and ‖R‖² (`rr`), all float64."""
    import torch

    a, b = params[KEY_VA].double(), params[KEY_VB].double()
    aga, acr = a @ gram @ a.T, a @ cross  # (r, r), (r, d_out)
    g = torch.Generator().manual_seed(0)
    starts = [params[KEY_LD].double()] + [torch.randn(a.shape[0], generator=g, dtype=torch.float64) for _ in range(RESTARTS)]
    return min(_alternate(aga, acr, b, rr, numel, lam_d) for lam_d in starts)


def _alternate(aga: torch.Tensor, acr: torch.Tensor, b: torch.Tensor, rr: float, numel: int, lam_d: torch.Tensor) -> float:
    """Alternating least squares from λ_d (λ_b solved first); the loss where it stops."""
    import torch

    lam_b = torch.zeros(b.shape[0], dtype=torch.float64)

    def loss(lam_b: torch.Tensor, lam_d: torch.Tensor) -> float:
        m = (lam_d[:, None] * b.T) * lam_b[None, :]  # ΔWᵀ = Aᵀ·M, M = diag(λ_d)·Bᵀ·diag(λ_b) (r, d_out)
        return (rr - 2 * (acr * m).sum().item() + (m * (aga @ m)).sum().item()) / numel

    best = loss(lam_b, lam_d)
    for _ in range(SWEEPS):
        c = lam_d[:, None] * b.T  # λ_b, column j: ⟨R_j, X·Aᵀ·c_j⟩ / ‖X·Aᵀ·c_j‖²
        num, den = (acr * c).sum(0), (c * (aga @ c)).sum(0)
        lam_b = torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))
        m = b.T * lam_b[None, :]  # λ_d: Σ_kl λ_k λ_l (a_kᵀ XᵀX a_l)(m_k·m_l) − 2 Σ_k λ_k a_kᵀ XᵀR m_k
        lam_d = torch.linalg.lstsq(aga * (m @ m.T), (acr * m).sum(1)).solution
        now = loss(lam_b, lam_d)
        if best - now <= 1e-13 * max(abs(best), 1e-300):
            return min(best, now)
        best = now
    return best


class VeRA(Method):
    name = "vera"
    help = "VeRA: frozen random A and B shared as PEFT draws them, only the scaling vectors λ_d (r) and λ_b (d_out) trained"
    label = "VeRA"
    trains = (KEY_LB, KEY_LD)
    caveat = "VeRA's optimum is the least alternating least squares finds from its start and 8 random points: not a proven minimum"

    def init_problem(self, spec: AdapterSpec) -> str | None:
        from lora_cli.methods.inits import INITS

        if INITS[spec.init].changes_base or INITS[spec.init].reads:
            return f"is not allowed with {self.name}, which draws its own frozen projections and starts at ΔW = 0; leave adapter.init out"
        return None

    def terms(self, spec: AdapterSpec, d_in: int, d_out: int) -> str | None:
        return f"{spec.rank} + {d_out}"

    def shapes(self, spec: AdapterSpec, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
        return {KEY_VA: (spec.rank, d_in), KEY_VB: (d_out, spec.rank), KEY_LB: (d_out,), KEY_LD: (spec.rank,)}

    def step_flops(self, spec: AdapterSpec, batch: int, d_in: int, d_out: int) -> float:
        return 6.0 * batch * spec.rank * (d_in + d_out)

    def start(self, w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: Any = None) -> tuple[Params, torch.Tensor]:
        import torch

        d_out, d_in = w.shape
        vera_a, vera_b = projections(prng_key(g), spec.rank, d_in, d_out)
        return {KEY_VA: vera_a, KEY_VB: vera_b, KEY_LB: torch.zeros(d_out), KEY_LD: torch.full((spec.rank,), D_INITIAL)}, w

    def merged(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.Tensor:
        return w + vera_delta(params)

    def module(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> Any:
        from lora_cli.methods.modules import VeRALinear, linear_from_weight

        return VeRALinear(linear_from_weight(w), params)

    def optimum(self, spec: AdapterSpec, fit: Residual, start: Params) -> float:
        return alternating_floor(fit.xtx, fit.xtr, fit.rr, fit.numel, start)

    def population(self, spec: AdapterSpec, target: torch.Tensor, noise_std: float, start: Params, sigma_half: torch.Tensor | None = None) -> float | None:
        import torch

        d = target.double()  # E‖(D − ΔW)x‖²/d_out on x ~ N(0, Σ): the moments XᵀX → Σ, XᵀR → Σ·Dᵀ, ‖R‖² → tr(D·Σ·Dᵀ), per row
        sigma = torch.eye(d.shape[1], dtype=torch.float64) if sigma_half is None else sigma_half.double() @ sigma_half.double()
        return noise_std**2 + alternating_floor(sigma, sigma @ d.T, torch.trace(d @ sigma @ d.T).item(), d.shape[0], start)

    def decayed_optimum(self, spec: AdapterSpec, target: torch.Tensor, frozen: torch.Tensor, start: Params, noise_std: float,
                        weight_decay: float) -> str:
        return "VeRA decays its scaling vectors, whose product with the frozen projections has no closed-form penalised optimum"

    def allowed(self, spec: AdapterSpec) -> str:
        return f"VeRA update on rank-{spec.rank} frozen projections"

    def words(self, record: Any) -> str:
        return f"VeRA, rank-{record.rank} frozen projections, trained scaling vectors"

    def sized(self, spec: AdapterSpec) -> str:
        return f"rank-{spec.rank} VeRA adapter"

    def peft_config(self, spec: AdapterSpec) -> dict[str, Any]:
        """adapter_config.json as PEFT's VeraConfig writes it, projections saved with the vectors."""
        return {"peft_type": "VERA", "r": spec.rank, "target_modules": [MODULE], "projection_prng_key": 0, "save_projection": True,
                "vera_dropout": 0.0, "d_initial": D_INITIAL, "fan_in_fan_out": False, "bias": "none", "task_type": None}


def prng_key(g: torch.Generator) -> int:
    """The projections' PRNG key, drawn from the adapter's generator (PEFT's keys are int32)."""
    import torch

    return int(torch.randint(2**31 - 1, (), generator=g))
