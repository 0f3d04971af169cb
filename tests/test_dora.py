"""DoRA: forward, gradient, merge and LoRA+ grouping, held to a hand formula in float64 and
to PEFT's own DoRA layer (peft/tuners/lora/dora.py) on the same tensors."""

import pytest
import torch
from torch.nn import functional as F
from torch.testing import assert_close

from lora_cli.methods.dora import start_magnitude
from lora_cli.methods.modules import LoRALinear, linear_from_weight
from lora_cli.methods.registry import METHODS, merge
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_M, AdapterSpec
from tests.conftest import engine_for, factors, linear_holder

peft = pytest.importorskip("peft")
D_IN, D_OUT, R = 7, 5, 2


def _tensors(dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    w, a, b = (torch.randn(*shape, generator=g, dtype=dtype) for shape in [(D_OUT, D_IN), (R, D_IN), (D_OUT, R)])
    m = torch.rand(D_OUT, generator=g, dtype=dtype) + 0.5
    x, y = torch.randn(9, D_IN, generator=g, dtype=dtype), torch.randn(9, D_OUT, generator=g, dtype=dtype)
    return w, a, b, m, x, y


def _ours(spec, w, a, b, m=None) -> LoRALinear:
    return LoRALinear(linear_from_weight(w), spec, factors(a, b, m if m is not None else start_magnitude(w, spec, a, b)))


def _hand_loss(w, a, b, m, x, y, s, detach=True):
    """MSE of (m / n)⊙x·(W + s·B·A)ᵀ with n = ‖W + s·B·A‖ per row, written out."""
    updated = w + s * b @ a
    n = torch.sqrt((updated**2).sum(dim=1))
    n = n.detach() if detach else n
    return ((x @ updated.T) * (m / n) - y).pow(2).mean()


def _peft_layer(spec, w, a, b, m=None):
    holder = linear_holder(w)
    config = peft.LoraConfig(r=spec.rank, lora_alpha=spec.alpha, use_dora=True, target_modules=["linear"], init_lora_weights=False)
    model = peft.get_peft_model(holder, config)
    layer = model.base_model.model.linear
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(a)
        layer.lora_B["default"].weight.copy_(b)
        layer.lora_magnitude_vector["default"].weight.copy_(m if m is not None else torch.linalg.norm(w + spec.scaling * b @ a, dim=1))
    return model, layer


def test_magnitude_starts_at_peft_s_row_norms_and_the_forward_at_the_base():
    spec = AdapterSpec(R, 4.0, method="dora")
    w, a, _, _, x, _ = _tensors()
    ours = _ours(spec, w, a, torch.zeros(D_OUT, R))
    _, layer = _peft_layer(spec, w, a, torch.zeros(D_OUT, R))
    peft_fresh = peft.get_peft_model(linear_holder(w), peft.LoraConfig(r=R, lora_alpha=4.0, use_dora=True, target_modules=["linear"]))
    assert_close(ours.magnitude.detach(), peft_fresh.base_model.model.linear.lora_magnitude_vector["default"].weight.detach())
    assert_close(ours.magnitude.detach(), torch.linalg.norm(w, dim=1))
    assert_close(ours(x), x @ w.T)


def test_forward_and_gradients_match_the_hand_formula_with_the_norm_detached():
    spec = AdapterSpec(R, 3.0, method="dora")
    w, a, b, m, x, y = _tensors(torch.float64)
    ours = _ours(spec, w, a, b, m)
    loss = F.mse_loss(ours(x), y)
    loss.backward()
    leaves = [t.clone().requires_grad_(True) for t in (a, b, m)]
    hand = _hand_loss(w, *leaves[:2], leaves[2], x, y, spec.scaling)
    hand.backward()
    assert_close(loss, hand, rtol=1e-12, atol=0)
    for param, leaf in zip(ours.named_adapter().values(), leaves):
        assert_close(param.grad, leaf.grad, rtol=1e-10, atol=1e-12)
    attached = [t.clone().requires_grad_(True) for t in (a, b, m)]
    _hand_loss(w, *attached[:2], attached[2], x, y, spec.scaling, detach=False).backward()
    assert not torch.allclose(ours.lora_A.grad, attached[0].grad), "detaching n changes lora_A's gradient (DoRA §4.3)"


def test_forward_and_gradients_match_peft():
    spec = AdapterSpec(R, 3.0, method="dora")
    w, a, b, m, x, y = _tensors()
    ours = _ours(spec, w, a, b, m)
    model, layer = _peft_layer(spec, w, a, b, m)
    F.mse_loss(ours(x), y).backward()
    F.mse_loss(model(x), y).backward()
    assert_close(ours(x), model(x), rtol=1e-5, atol=1e-6)
    theirs = [layer.lora_A["default"].weight, layer.lora_B["default"].weight, layer.lora_magnitude_vector["default"].weight]
    for param, their in zip(ours.named_adapter().values(), theirs):
        assert_close(param.grad, their.grad, rtol=1e-4, atol=1e-6)
    assert METHODS["dora"].parameter_count(spec, D_IN, D_OUT) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_merge_matches_peft_s_merge_and_the_unmerged_forward():
    spec = AdapterSpec(R, 3.0, method="dora")
    w, a, b, m, x, _ = _tensors()
    merged = merge({"weight": w}, spec, factors(a, b, m))["weight"]
    model, _ = _peft_layer(spec, w, a, b, m)
    with torch.no_grad():
        assert_close(x @ merged.T, _ours(spec, w, a, b, m)(x), rtol=1e-5, atol=1e-5)
        assert_close(merged, model.merge_and_unload().linear.weight, rtol=1e-6, atol=1e-6)
    assert_close(METHODS["dora"].delta(w, spec, factors(a, b, m)), merged - w)
    with pytest.raises(ValueError, match=KEY_M):
        merge({"weight": w}, spec, factors(a, b))


def test_lora_plus_gives_the_magnitude_lora_b_s_rate_as_peft_does():
    from peft.optimizers import create_loraplus_optimizer

    spec = AdapterSpec(R, 1.0, lr_ratio=16.0, method="dora")
    w, a, _, _, x, y = _tensors()
    b0 = torch.zeros(D_OUT, R)
    ours = engine_for("reference", w, spec, factors(a, b0, start_magnitude(w, spec, a, b0)), x, y, 1e-3, 4)
    ours_lrs = {id(p): group["lr"] for group in ours.opt.param_groups for p in group["params"]}
    model, _ = _peft_layer(spec, w, a, torch.zeros(D_OUT, R))
    theirs = create_loraplus_optimizer(model, torch.optim.Adam, lr=1e-3, loraplus_lr_ratio=16.0)
    names = {id(q): name for name, q in model.named_parameters()}
    theirs_lrs = {names[id(p)].split(".")[3]: group["lr"] for group in theirs.param_groups for p in group["params"]}
    assert theirs_lrs == {"lora_A": 1e-3, "lora_B": 16e-3, "lora_magnitude_vector": 16e-3}
    module = ours.model
    assert ours_lrs == {id(module.lora_A): 1e-3, id(module.lora_B): 16e-3, id(module.magnitude): 16e-3}
    assert set(ours.trained()) == {KEY_A, KEY_B, KEY_M}
