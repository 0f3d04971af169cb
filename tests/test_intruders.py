"""Intruder dimensions and rank_90, held to PEFT's own detection (peft/tuners/lora/intruders.py,
reduce_intruder_dimension, which logs how many it finds) on the same matrices, and to a direct
count of ΔW's energy."""

import pytest
import torch
from torch import nn

from lora_cli.core.subspace import Base, Target, best_update, intruders, left_basis, rank_90

peft = pytest.importorskip("peft", reason="peft is not installed: .venv/bin/pip install -e '.[test]'")
from peft.tuners.lora.intruders import reduce_intruder_dimension  # noqa: E402


class _One(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data = weight.clone()


def _peft_count(weight, lora_a, lora_b, alpha) -> int:
    model = peft.get_peft_model(_One(weight), peft.LoraConfig(r=lora_a.shape[0], lora_alpha=alpha, target_modules=["linear"]))
    layer = model.base_model.model.linear
    layer.lora_A["default"].weight.data, layer.lora_B["default"].weight.data = lora_a.clone(), lora_b.clone()
    said = []
    reduce_intruder_dimension(model, logging_sink=said.append)
    line = next(text for text in said if text.endswith("intruders") or "Intruders:" in text)
    return 0 if line.endswith("No intruders") else int(line.rsplit(" ", 1)[1])


CASES = [(seed, rank, size) for seed in range(3) for rank, size in ((1, 0.003), (2, 0.01), (1, 0.3), (2, 3.0), (4, 10.0), (8, 30.0))]


@pytest.mark.parametrize(("seed", "rank", "size"), CASES)
def test_the_intruder_count_is_peft_s(seed, rank, size):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(40, 32, generator=g)
    lora_a, lora_b = torch.randn(rank, 32, generator=g), torch.randn(40, rank, generator=g) * size / rank
    delta = (8.0 / rank) * lora_b @ lora_a  # PEFT's get_delta_weight: scaling alpha/r times B·A
    ours = intruders(Base.of(weight), weight.double() + delta.double())
    assert ours == _peft_count(weight, lora_a, lora_b, 8.0)
    assert 0 <= ours <= 10


def test_some_cases_have_intruders_and_some_none():
    counts = set()
    for seed, rank, size in CASES:
        g = torch.Generator().manual_seed(seed)
        weight = torch.randn(40, 32, generator=g)
        lora_a, lora_b = torch.randn(rank, 32, generator=g), torch.randn(40, rank, generator=g) * size / rank
        counts.add(intruders(Base.of(weight), weight.double() + (8.0 / rank) * (lora_b @ lora_a).double()))
    assert 0 in counts and max(counts) >= 2  # the cases exercise both answers


def test_the_left_basis_spans_the_weight_s_columns_in_singular_value_order():
    weight = torch.randn(12, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    basis, (u, _, _) = left_basis(weight), torch.linalg.svd(weight, full_matrices=False)
    assert basis.shape == (12, 7)
    assert torch.allclose((basis.T @ u).abs(), torch.eye(7, dtype=torch.float64), atol=1e-8)


def test_rank_90_counts_the_singular_values_that_hold_90_percent_of_the_energy():
    assert rank_90(torch.tensor([3.0, 1.0, 1.0])) == 2  # σ₁² is 9 of 11 (82 %): two are needed
    assert rank_90(torch.tensor([3.0, 0.5, 0.5])) == 1  # 9 of 9.5 (95 %)
    assert rank_90(torch.tensor([1.0, 1.0, 1.0, 1.0])) == 4 and rank_90(torch.zeros(3)) == 0


def test_the_best_update_is_the_truncated_target_and_under_a_covariance_the_whitened_one():
    g = torch.Generator().manual_seed(2)
    d = torch.randn(6, 8, generator=g, dtype=torch.float64)
    target = Target.of(d)
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    assert torch.allclose(best_update(target, 2)[0], (u[:, :2] * s[:2]) @ vh[:2])
    a = torch.randn(8, 8, generator=g, dtype=torch.float64)
    sigma = a @ a.T + 0.5 * torch.eye(8, dtype=torch.float64)
    w, v = torch.linalg.eigh(sigma)
    half = (v * w.sqrt()) @ v.T
    best, (bu, bs, bvh) = best_update(target, 2, half)
    assert torch.allclose((bu * bs) @ bvh, best) and torch.allclose(bs, torch.linalg.svdvals(best)[:2])  # its SVD, from its factors
    assert torch.allclose(bu.T @ bu, torch.eye(2, dtype=torch.float64)) and torch.allclose(bvh @ bvh.T, torch.eye(2, dtype=torch.float64))
    error = d - best
    others = [d - (u[:, :2] * s[:2]) @ vh[:2]]  # the isotropic answer is worse under Σ
    assert torch.linalg.matrix_rank(best) == 2
    assert torch.trace(error @ sigma @ error.T) < min(torch.trace(e @ sigma @ e.T) for e in others)
