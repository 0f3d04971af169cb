"""Each adapter init against an independent computation: PEFT's own init code (same random
stream, or the same deterministic factorisation) and the blog's torch.randn."""

import math

import pytest
import torch
from torch import nn

from lora_cli.methods.inits import INITS, InitData, init_adapter
from lora_cli.methods.lora import low_rank_delta, state_dict
from lora_cli.methods.peft import export, export_spec
from lora_cli.methods.spec import KEY_A, KEY_B, AdapterSpec

peft = pytest.importorskip("peft")
D_IN, D_OUT = 40, 24


class Holder(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)


def _peft_layer(w: torch.Tensor, spec: AdapterSpec):
    """PEFT's LoRA layer on a copy of `w`, its adapter not initialised yet."""
    config = peft.LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, target_modules=["linear"], init_lora_weights=False, use_rslora=spec.scaling_rule == "rslora"
    )
    return peft.get_peft_model(Holder(w), config).base_model.model.linear


def _base(seed: int = 5) -> torch.Tensor:
    return torch.randn(D_OUT, D_IN, generator=torch.Generator().manual_seed(seed))


# our name -> how PEFT initialises it (run right after torch.manual_seed)
PEFT_INIT = {
    "kaiming": lambda layer: layer.reset_lora_parameters("default", True),
    "gaussian": lambda layer: layer.reset_lora_parameters("default", "gaussian"),
    "orthogonal": lambda layer: layer.orthogonal_init("default"),
    "pissa": lambda layer: layer.pissa_init("default", "pissa"),
    "olora": lambda layer: layer.olora_init("default"),
}


@pytest.mark.parametrize("name", sorted(PEFT_INIT))
@pytest.mark.parametrize("scaling_rule", ["standard", "rslora"])
def test_each_peft_named_init_is_exactly_peft_s(name, scaling_rule):
    w, spec = _base(), AdapterSpec(4, 3.0, name, scaling_rule)
    ours = init_adapter(w, spec, torch.Generator().manual_seed(11))
    layer = _peft_layer(w, spec)
    torch.manual_seed(11)
    PEFT_INIT[name](layer)
    torch.testing.assert_close(ours[0], layer.lora_A["default"].weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ours[1], layer.lora_B["default"].weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ours[2], layer.base_layer.weight.detach(), rtol=1e-6, atol=1e-6)  # the frozen base


def test_normal_is_the_blog_s_randn_and_b_starts_at_zero():
    a, b, frozen = init_adapter(_base(), AdapterSpec(3, 1.0, "normal"), torch.Generator().manual_seed(2))
    assert torch.equal(a, torch.randn(3, D_IN, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(b, torch.zeros(D_OUT, 3)) and torch.equal(frozen, _base())


def _gradient(w, seed=3):
    """∇_W of MSE(X·Wᵀ, y) by autograd on random rows: an independent first full gradient."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(200, D_IN, generator=g), torch.randn(200, D_OUT, generator=g)
    weight = w.clone().requires_grad_()
    torch.nn.functional.mse_loss(x @ weight.T, y).backward()
    return weight.grad, x, y


def _data(grad=None, x=None, source=None):
    """InitData of given tensors (what the recipes supply from the run's rows)."""
    return InitData(lambda: grad, lambda: x, lambda: source)


@pytest.mark.parametrize("name", sorted(INITS))
def test_every_init_starts_at_the_base_s_function(name):
    """W_frozen + s·B₀·A₀ = W (LoRA-One: W frozen as it is, the model one step away), and for
    orthogonal B₀·A₀ = 0 with both factors non-zero."""
    w, spec = _base(), AdapterSpec(4, 2.0, name)
    grad, x, _ = _gradient(w)
    a, b, frozen = init_adapter(w, spec, torch.Generator().manual_seed(0), _data(grad, x, 2 * x + 1))
    assert a.shape == (4, D_IN) and b.shape == (D_OUT, 4)
    if not INITS[name].starts_at_base:
        assert torch.equal(frozen, w) and (b @ a).abs().max() > 0
        return
    torch.testing.assert_close(frozen + spec.scaling * (b @ a), w, rtol=1e-5, atol=1e-5)
    if name == "orthogonal":
        assert a.abs().max() > 0 and b.abs().max() > 0 and (b @ a).abs().max() < 1e-6
    if name == "pissa":  # the top-r part moved into the adapter: s·B₀·A₀ is W's best rank-r part (SVD)
        u, sigma, vh = torch.linalg.svd(w.double())
        best = (u[:, :4] * sigma[:4]) @ vh[:4]
        torch.testing.assert_close((spec.scaling * (b @ a)).double(), best, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scaling_rule", ["standard", "rslora"])
def test_milora_is_pissa_on_the_minor_components(scaling_rule):
    """MiLoRA's reference formula, written here from a float64 SVD: s·B₀·A₀ is W's bottom-r part,
    A₀'s rows are √(σᵢ/s)·vᵢ and B₀'s columns √(σᵢ/s)·uᵢ for the r smallest σᵢ, the rest is frozen."""
    w, spec = _base(), AdapterSpec(3, 1.5, "milora", scaling_rule)
    a, b, frozen = init_adapter(w, spec, torch.Generator())
    u, sigma, vh = torch.linalg.svd(w.double(), full_matrices=False)
    bottom = (u[:, -3:] * sigma[-3:]) @ vh[-3:]
    torch.testing.assert_close((spec.scaling * (b @ a)).double(), bottom, rtol=0, atol=1e-5)
    torch.testing.assert_close(frozen.double(), w.double() - bottom, rtol=0, atol=1e-5)
    root = (sigma[-3:] / spec.scaling).sqrt()
    torch.testing.assert_close(a.double().norm(dim=1), root, rtol=1e-5, atol=0)
    torch.testing.assert_close(b.double().norm(dim=0), root, rtol=1e-5, atol=0)
    torch.testing.assert_close((a.double() @ vh[-3:].T).abs(), torch.diag(root), rtol=0, atol=1e-5)  # along the minor v's (up to sign)


@pytest.mark.parametrize("gamma", [16.0, 64.0])
def test_lora_one_is_its_reference_formula_on_the_first_full_gradient(gamma):
    """LoRA-One's reference code, written here: −G = U·S·Vᵀ (G by autograd on the rows, and by our
    moments), B = U_r·√S_r/√S₀/√γ, A = √S_r·V_rᵀ/√S₀/√γ, W frozen as it is."""
    from lora_cli.core.moments import Moments

    w, spec = _base(), AdapterSpec(3, 2.0, "lora_one", gamma=gamma)
    grad, x, y = _gradient(w)
    moments_grad = Moments.of(x, y).residual(w).gradient()
    torch.testing.assert_close(moments_grad.float(), grad, rtol=1e-5, atol=1e-7)  # the recipes' gradient is autograd's
    a, b, frozen = init_adapter(w, spec, torch.Generator(), _data(moments_grad.float()))
    u, sigma, vh = torch.linalg.svd(-grad.double())
    scale = 1 / (sigma[0] * gamma)  # (√S·√S)/(√S₀·√S₀)/γ per direction
    expected = (u[:, :3] * sigma[:3]) @ vh[:3] * scale  # B·A
    torch.testing.assert_close((b @ a).double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(b.double().norm(dim=0), (sigma[:3] / sigma[0] / gamma).sqrt(), rtol=1e-5, atol=0)
    assert torch.equal(frozen, w)


@pytest.mark.parametrize("scaling_rule, gamma", [("standard", 16.0), ("rslora", 4.0)])
def test_lora_ga_is_peft_s_lora_ga_init_bit_for_bit(scaling_rule, gamma):
    """PEFT's own lora_ga_init (ArB2r, stable scale) on the same gradient and the same random stream."""
    w, spec = _base(), AdapterSpec(4, 3.0, "lora_ga", scaling_rule, gamma=gamma)
    grad = _gradient(w)[0]
    ours = init_adapter(w, spec, torch.Generator().manual_seed(11), _data(grad))
    layer = _peft_layer(w, spec)
    layer.get_base_layer()._peft_loraga_grad = grad.clone()
    torch.manual_seed(int(torch.randint(2**62, (), generator=torch.Generator().manual_seed(11))))
    layer.lora_ga_init("default", peft.LoraGAConfig(direction="ArB2r", scale="stable", stable_gamma=gamma))
    torch.testing.assert_close(ours[0], layer.lora_A["default"].weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ours[1], layer.lora_B["default"].weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ours[2], layer.base_layer.weight.detach(), rtol=0, atol=0)


def test_lora_ga_paper_is_the_papers_formula():
    """The LoRA-GA paper's code, written here from an exact float64 SVD of G: A = ±Vᵀ[:r]·c and
    B = ±U[:, r:2r]·c with c = d_out^¼/√γ (no singular values), the residual frozen."""
    w, spec = _base(), AdapterSpec(3, 2.0, "lora_ga_paper", gamma=8.0)
    g = torch.Generator().manual_seed(2)  # a gradient with well-separated singular values, which a randomized SVD finds exactly
    u, _ = torch.linalg.qr(torch.randn(D_OUT, D_OUT, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(D_IN, D_OUT, generator=g, dtype=torch.float64))
    grad = ((u * 2.0 ** -torch.arange(D_OUT, dtype=torch.float64)) @ v.T).float()
    a, b, frozen = init_adapter(w, spec, torch.Generator().manual_seed(1), _data(grad))
    c = D_OUT**0.25 / 8.0**0.5
    torch.testing.assert_close((a.double() @ v[:, :3]).abs(), c * torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close((u[:, 3:6].T @ b.double()).abs(), c * torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(frozen + spec.scaling * (b @ a), w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name, inputs", [("corda_ipm", "target"), ("corda_kpm", "source")])
@pytest.mark.parametrize("scaling_rule", ["standard", "rslora"])
def test_corda_is_peft_s_corda_bit_for_bit(name, inputs, scaling_rule):
    """PEFT's own collect_eigens_for_layer, crop_corda_eigens and corda_init on the covariance its
    preprocessing hook builds from one batch of every row: ipm from the finetune inputs (the top
    r of W·C), kpm from the pretraining inputs (the bottom r)."""
    from peft.tuners.lora import corda

    w, spec = _base(), AdapterSpec(3, 2.0, name, scaling_rule)
    g = torch.Generator().manual_seed(6)
    target, source = torch.randn(300, D_IN, generator=g), 2.0 * torch.randn(300, D_IN, generator=g)
    ours = init_adapter(w, spec, torch.Generator(), _data(None, target, source))
    holder = Holder(w)
    config = peft.LoraConfig(r=3, lora_alpha=2.0, target_modules=["linear"], init_lora_weights=False, use_rslora=scaling_rule == "rslora")
    x = target if inputs == "target" else source
    x = x / torch.max(x).abs()  # PEFT's hook on one batch of every row: its sum over 1 batch, divided by 1
    holder.linear.covariance_matrix = x.t().matmul(x)
    holder.linear.eigens = corda.collect_eigens_for_layer(holder.linear, config)
    holder.linear.rank, holder.linear.corda_method = 3, name.split("_")[1]
    corda.crop_corda_eigens(holder, config)
    layer = peft.get_peft_model(holder, config).base_model.model.linear
    base = layer.get_base_layer()
    layer.corda_init("default", "corda")
    torch.testing.assert_close(ours[0], layer.lora_A["default"].weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ours[1], layer.lora_B["default"].weight.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ours[2], base.weight.detach(), rtol=0, atol=0)


def test_eva_is_peft_s_eva_on_one_batch_of_every_row():
    """PEFT's get_eva_state_dict (rho 1) on one batch holding every finetune row: its incremental
    PCA then sees all the rows at once, and its components are ours to 1e-6 (its SVD is randomized,
    so the test's spectrum is steep)."""
    from peft.tuners.lora.eva import get_eva_state_dict

    g = torch.Generator().manual_seed(7)
    q, _ = torch.linalg.qr(torch.randn(D_IN, D_IN, generator=g))
    x = (torch.randn(2000, D_IN, generator=g) * torch.arange(1, D_IN + 1) ** -2.0) @ q.T + 0.3  # a steep spectrum, a mean
    w, spec = _base(), AdapterSpec(3, 2.0, "eva")
    a, b, frozen = init_adapter(w, spec, torch.Generator(), _data(None, x))
    config = peft.LoraConfig(r=3, target_modules=["linear"], init_lora_weights="eva", eva_config=peft.EvaConfig(rho=1.0))
    theirs = get_eva_state_dict(Holder(w), [x], config, forward_fn=lambda model, rows: model.linear(rows), prepare_model_inputs_fn=None,
                                prepare_layer_inputs_fn=None, show_progress_bar=False)["linear"]
    torch.testing.assert_close((a.double() @ theirs.double().T).abs(), torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-6)
    assert torch.equal(b, torch.zeros(D_OUT, 3)) and torch.equal(frozen, w)


def test_a_gradient_init_without_the_gradient_is_refused():
    with pytest.raises(ValueError, match="the lora_one init needs data: gradient"):
        init_adapter(_base(), AdapterSpec(2, 1.0, "lora_one"), torch.Generator())


def test_orthogonal_needs_an_even_rank():
    with pytest.raises(ValueError, match="even rank"):
        init_adapter(_base(), AdapterSpec(3, 1.0, "orthogonal"), torch.Generator())


@pytest.mark.parametrize("rule, factor", [("standard", 2.0), ("rslora", math.sqrt(2.0))])
def test_an_init_that_changes_the_base_exports_as_a_rank_2r_lora_onto_w(rule, factor):
    """PEFT's conversion: A' = [A; A₀], B' = [B, −B₀], alpha' = 2·alpha (√2·alpha for rsLoRA),
    so that W + s'·B'·A' = (W − s·B₀·A₀) + s·B·A for any trained A, B."""
    w, spec = _base(), AdapterSpec(3, 1.5, "pissa", rule)
    a0, b0, frozen = init_adapter(w, spec, torch.Generator())
    trained = state_dict(a0 + 0.1 * torch.randn(a0.shape), b0 - 0.2 * torch.randn(b0.shape))
    stored = export_spec(spec)
    assert (stored.rank, stored.alpha, stored.scaling_rule) == (6, pytest.approx(factor * 1.5), rule)
    assert stored.scaling == pytest.approx(spec.scaling)
    out = export(spec, trained, state_dict(a0, b0))
    assert out[KEY_A].shape == (6, D_IN) and out[KEY_B].shape == (D_OUT, 6)
    torch.testing.assert_close(w + low_rank_delta(stored, out), frozen + low_rank_delta(spec, trained), rtol=1e-5, atol=1e-5)
