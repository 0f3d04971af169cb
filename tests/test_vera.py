"""VeRA: its frozen projections are PEFT's own (same PRNG key, bit for bit), its ΔW PEFT's
get_delta_weight, its alternating optimum an L-BFGS minimisation of the same loss, and the
reference engine trains the two vectors alone."""

import pytest
import torch

from lora_cli.core.moments import Moments
from lora_cli.errors import ConfigError
from lora_cli.methods.registry import METHODS
from lora_cli.methods.spec import AdapterSpec
from lora_cli.methods.vera import KEY_LB, KEY_LD, KEY_VA, KEY_VB, alternating_floor, projections, vera_delta
from lora_cli.recipes import pipeline
from lora_cli.train.engines import Runtime
from tests.conftest import lbfgs_minimum, linear_holder, tiny_config

peft = pytest.importorskip("peft")
D_OUT, D_IN, R = 6, 9, 4


def _peft_vera(w, key):
    return peft.get_peft_model(linear_holder(w), peft.VeraConfig(r=R, target_modules=["linear"], projection_prng_key=key, save_projection=True))


def test_projections_and_delta_are_peft_s():
    w = torch.randn(D_OUT, D_IN, generator=torch.Generator().manual_seed(0))
    model = _peft_vera(w, 1234)
    layer = model.base_model.model.linear
    a, b = projections(1234, R, D_IN, D_OUT)
    assert torch.equal(a, layer.vera_A["default"]) and torch.equal(b, layer.vera_B["default"])
    g = torch.Generator().manual_seed(1)
    lam_b, lam_d = torch.randn(D_OUT, generator=g), torch.randn(R, generator=g)
    with torch.no_grad():
        layer.vera_lambda_b["default"].copy_(lam_b)
        layer.vera_lambda_d["default"].copy_(lam_d)
    ours = vera_delta({KEY_VA: a, KEY_VB: b, KEY_LB: lam_b, KEY_LD: lam_d})
    torch.testing.assert_close(ours, layer.get_delta_weight("default"), rtol=1e-6, atol=1e-7)


def _lbfgs(objective, params):
    return lbfgs_minimum(objective, params, 4, max_iter=1000)


def test_the_alternating_optimum_is_the_best_lbfgs_minimum_on_the_data():
    """min over (λ_b, λ_d) of mean((R − X·ΔWᵀ)²) by L-BFGS in float64 on the rows, from the method's
    start and from 12 random points: the alternating optimum equals the least of them."""
    g = torch.Generator().manual_seed(2)
    x, r = torch.randn(200, D_IN, generator=g).double(), torch.randn(200, D_OUT, generator=g).double()  # float32 values: the moments see them exactly
    start, _ = METHODS["vera"].start(torch.zeros(D_OUT, D_IN), AdapterSpec(R, 1.0, method="vera"), torch.Generator().manual_seed(3))
    a, b = start[KEY_VA].double(), start[KEY_VB].double()
    points = [(start[KEY_LB].double(), start[KEY_LD].double())]
    seeded = [torch.Generator().manual_seed(seed) for seed in range(12)]
    points += [(torch.randn(D_OUT, generator=s, dtype=torch.float64), torch.randn(R, generator=s, dtype=torch.float64)) for s in seeded]
    found = []
    for lam_b0, lam_d0 in points:
        lam_b, lam_d = lam_b0.clone().requires_grad_(), lam_d0.clone().requires_grad_()
        found.append(_lbfgs(lambda: ((r - x @ ((lam_b[:, None] * b) @ (lam_d[:, None] * a)).T) ** 2).mean(), [lam_b, lam_d]))
    fit = Moments.of(x.float(), r.float()).residual(torch.zeros(D_OUT, D_IN))
    closed = alternating_floor(fit.xtx, fit.xtr, fit.rr, fit.numel, start)
    assert len({round(f, 6) for f in found}) > 1  # more than one local minimum: why the restarts
    assert closed == pytest.approx(min(found), rel=1e-9)


def test_the_population_optimum_is_an_lbfgs_minimum_of_the_population_loss():
    g = torch.Generator().manual_seed(4)
    d = torch.randn(D_OUT, D_IN, generator=g, dtype=torch.float64)
    m = torch.randn(D_IN, D_IN, generator=g, dtype=torch.float64)
    vals, vecs = torch.linalg.eigh(m @ m.T / D_IN + 0.1 * torch.eye(D_IN, dtype=torch.float64))  # Σ
    sigma_half = (vecs * vals.sqrt()) @ vecs.T
    start, _ = METHODS["vera"].start(torch.zeros(D_OUT, D_IN), AdapterSpec(R, 1.0, method="vera"), torch.Generator().manual_seed(5))
    a, b = start[KEY_VA].double(), start[KEY_VB].double()
    lam_b, lam_d = start[KEY_LB].double().clone().requires_grad_(), start[KEY_LD].double().clone().requires_grad_()

    def population():
        error = (d - (lam_b[:, None] * b) @ (lam_d[:, None] * a)) @ sigma_half
        return 0.2**2 + (error**2).sum() / D_OUT

    found = _lbfgs(population, [lam_b, lam_d])
    closed = METHODS["vera"].population(AdapterSpec(R, 1.0, method="vera"), d.float(), 0.2, start, sigma_half)
    assert closed <= found * (1 + 1e-9)  # the restarts can only find less than L-BFGS from the start


def test_the_reference_engine_trains_the_vectors_alone():
    cfg = tiny_config(**{"adapter.method": "vera", "adapter.rank": 8, "finetune.epochs": 6, "finetune.lr": 0.01})
    base = pipeline.pretrain(cfg).weight
    result = pipeline.finetune(cfg, base, Runtime("reference"))
    for key in (KEY_VA, KEY_VB):
        assert torch.equal(result.adapter[key], result.initial[key])
    assert not torch.equal(result.adapter[KEY_LB], result.initial[KEY_LB])
    assert result.history.final < result.history.baseline


def test_vera_refuses_an_init_that_changes_the_base():
    with pytest.raises(ConfigError, match="adapter.init = 'pissa' is not allowed with vera"):
        tiny_config(**{"adapter.method": "vera", "adapter.init": "pissa"})
