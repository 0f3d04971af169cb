"""The LoRA layer, its inits and the merge, against a plain nn.Linear and hand-computed tensors."""


import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lora_cli.methods.inits import init_adapter
from lora_cli.methods.modules import LoRALinear
from lora_cli.methods.registry import METHODS, merge
from lora_cli.methods.spec import KEY_A, KEY_B, AdapterSpec
from tests.conftest import factors


def _base(d_in=7, d_out=5, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out, bias=False)


def _adapter(rank=2, alpha=3.0, init="gaussian", d_in=7, d_out=5) -> LoRALinear:
    spec = AdapterSpec(rank=rank, alpha=alpha, init=init)
    base = _base(d_in, d_out)
    a, b, frozen = init_adapter(base.weight.detach(), spec, torch.Generator().manual_seed(1))
    assert frozen is base.weight or torch.equal(frozen, base.weight)
    return LoRALinear(base, spec, factors(a, b))


def test_adapter_at_init_equals_the_base():
    base = _base()
    reference = nn.Linear(7, 5, bias=False)
    reference.weight.data.copy_(base.weight.data)
    layer = _adapter()
    x = torch.randn(11, 7)
    assert_close(layer(x), reference(x), rtol=0, atol=0)


def test_forward_is_base_plus_scaled_low_rank_product():
    layer = _adapter(rank=2, alpha=3.0)
    with torch.no_grad():
        layer.lora_B.copy_(torch.arange(10.0).reshape(5, 2) / 10)
    x = torch.randn(4, 7)
    w = layer.base.weight
    # hand-formed reference: x·(W + (alpha/r)·B·A)ᵀ
    expected = x @ (w + 1.5 * layer.lora_B @ layer.lora_A).T
    assert_close(layer(x), expected)


@pytest.mark.parametrize("rank", [1, 3])
def test_only_the_adapter_trains_and_its_size_is_r_times_din_plus_dout(rank):
    layer = _adapter(rank=rank)
    trainable = [p for p in layer.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == rank * (7 + 5) == METHODS["lora"].parameter_count(AdapterSpec(rank, 1.0), 7, 5)
    assert {id(p) for p in trainable} == {id(p) for p in layer.named_adapter().values()}
    assert not layer.base.weight.requires_grad
    assert layer.lora_A.shape == (rank, 7) and layer.lora_B.shape == (5, rank)


def test_merged_forward_equals_adapter_forward():
    layer = _adapter(rank=2, alpha=4.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    spec = AdapterSpec(rank=2, alpha=4.0)
    merged = merge({"weight": layer.base.weight.detach()}, spec, factors(layer.lora_A, layer.lora_B))
    plain = nn.Linear(7, 5, bias=False)
    plain.weight.data.copy_(merged["weight"])
    x = torch.randn(9, 7)
    assert_close(plain(x), layer(x), rtol=1e-5, atol=1e-5)


def test_merge_is_pure_and_hand_checked():
    w = torch.zeros(2, 3)
    adapter = {KEY_A: torch.tensor([[1.0, 2.0, 3.0]]), KEY_B: torch.tensor([[1.0], [-1.0]])}  # r=1, d_in=3, d_out=2
    spec = AdapterSpec(rank=1, alpha=0.5)  # scaling 0.5
    merged = merge({"weight": w}, spec, adapter)["weight"]
    assert_close(merged, torch.tensor([[0.5, 1.0, 1.5], [-0.5, -1.0, -1.5]]))
    assert_close(METHODS["lora"].delta(w, spec, adapter), merged)
    assert torch.equal(w, torch.zeros(2, 3)), "inputs are not modified"
    with pytest.raises(ValueError, match="not \\("):
        merge({"weight": torch.zeros(3, 3)}, spec, adapter)


def test_scaling_rules_are_the_lora_and_rslora_formulas():
    assert AdapterSpec(rank=4, alpha=8.0).scaling == 2.0  # alpha / r
    assert AdapterSpec(rank=4, alpha=8.0, scaling_rule="rslora").scaling == 4.0  # alpha / sqrt(r)
    assert AdapterSpec(rank=1, alpha=3.0, scaling_rule="rslora").scaling == AdapterSpec(rank=1, alpha=3.0).scaling
