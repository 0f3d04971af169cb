"""The LoRA layer and merge, checked against a plain nn.Linear and hand-computed tensors."""

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from lora_cli.core.adapter import LoRALinear, LoraSpec, init_lora_a, lora_parameter_count, merge_weights


def _base(d_in=7, d_out=5, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out, bias=False)


def _adapter(rank=2, alpha=3.0, init="gaussian", d_in=7, d_out=5) -> LoRALinear:
    spec = LoraSpec(rank=rank, alpha=alpha, init=init)
    return LoRALinear(_base(d_in, d_out), spec, init_lora_a(spec, d_in, torch.Generator().manual_seed(1)))


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
    assert sum(p.numel() for p in trainable) == rank * (7 + 5) == lora_parameter_count(7, 5, rank)
    assert {id(p) for p in trainable} == {id(p) for p in layer.adapter_parameters()}
    assert not layer.base.weight.requires_grad
    assert layer.lora_A.shape == (rank, 7) and layer.lora_B.shape == (5, rank)


def test_merged_forward_equals_adapter_forward():
    layer = _adapter(rank=2, alpha=4.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    merged = merge_weights(layer.base.weight.detach(), layer.lora_A.detach(), layer.lora_B.detach(), layer.scaling)
    plain = nn.Linear(7, 5, bias=False)
    plain.weight.data.copy_(merged)
    x = torch.randn(9, 7)
    assert_close(plain(x), layer(x), rtol=1e-5, atol=1e-5)


def test_merge_is_pure_and_hand_checked():
    w = torch.zeros(2, 3)
    a = torch.tensor([[1.0, 2.0, 3.0]])  # (r=1, d_in=3)
    b = torch.tensor([[1.0], [-1.0]])  # (d_out=2, r=1)
    merged = merge_weights(w, a, b, scaling=0.5)
    assert_close(merged, torch.tensor([[0.5, 1.0, 1.5], [-0.5, -1.0, -1.5]]))
    assert torch.equal(w, torch.zeros(2, 3)), "inputs are not modified"
    with pytest.raises(ValueError, match="do not fit"):
        merge_weights(torch.zeros(3, 3), a, b, 1.0)


def test_init_variants():
    g = torch.Generator().manual_seed(0)
    gauss = init_lora_a(LoraSpec(4, 1.0, "gaussian"), 1000, g)
    assert abs(gauss.std().item() - 1.0) < 0.05
    kaiming = init_lora_a(LoraSpec(4, 1.0, "kaiming"), 1000, g)
    bound = 1 / math.sqrt(1000)  # PEFT / nn.Linear default: U(-1/sqrt(d_in), 1/sqrt(d_in))
    assert kaiming.abs().max().item() <= bound and kaiming.abs().max().item() > 0.9 * bound
