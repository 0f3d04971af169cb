"""Data generation: exact, reproducible, one independent stream per purpose."""

import pytest
import torch
from torch.testing import assert_close

from lora_cli.core import data, shifts
from lora_cli.core.rng import generator
from lora_cli.recipes.data import regression, thetas
from tests.conftest import tiny_config


def test_y_is_x_theta_and_shift_adds_the_value():
    cfg = tiny_config()
    theta, theta2 = thetas(cfg)
    x, y = regression(cfg, theta, "pretrain")
    assert theta.shape == (33, 32) and x.shape == (512, 33) and y.shape == (512, 32)
    assert_close(y, x @ theta)
    assert_close(theta2, theta + 1.0, rtol=0, atol=0)
    x2, y2 = regression(cfg, theta2, "finetune")
    assert_close(y2, x2 @ (theta + 1.0))
    assert not torch.equal(x, x2), "the finetune data is a fresh draw"


def test_same_seed_is_bit_identical_and_seeds_differ():
    a, b = (data.make_regression(5, torch.ones(3, 2), generator(0, "x_pretrain"), generator(0, "noise_pretrain"), 0.1) for _ in "ab")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = data.make_regression(5, torch.ones(3, 2), generator(1, "x_pretrain"), generator(1, "noise_pretrain"), 0.1)
    assert not torch.equal(a[0], c[0])


def test_streams_are_independent_of_other_settings():
    # noise only touches y; the X draw and θ stay the same
    clean, noisy = tiny_config(), tiny_config(**{"data.noise_std": 0.5})
    (x1, y1), (x2, y2) = (regression(cfg, thetas(cfg)[0], "pretrain") for cfg in (clean, noisy))
    assert torch.equal(x1, x2)
    residual = y2 - y1
    assert 0.4 < residual.std().item() < 0.6


def test_the_true_delta_of_an_add_shift_is_value_times_ones_in_weight_layout():
    theta = torch.randn(4, 3)
    theta2 = shifts.shift_theta(theta, shifts.ShiftSpec("add", 2.5))
    assert_close(shifts.true_delta(theta, theta2), torch.full((3, 4), 2.5))


def test_unknown_kinds_and_purposes_are_refused():
    with pytest.raises(ValueError, match="unknown shift kind 'twist'"):
        shifts.shift_theta(torch.zeros(2, 2), shifts.ShiftSpec("twist", 1.0))
    with pytest.raises(ValueError):
        generator(0, "typo")


def test_a_scale_shift_moves_w_by_value_minus_one_times_theta():
    theta = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    delta = shifts.true_delta(theta, shifts.shift_theta(theta, shifts.ShiftSpec("scale", 1.5)))
    assert_close(delta, 0.5 * theta.T)


def test_a_lowrank_shift_has_exactly_the_singular_values_asked_for():
    theta = torch.randn(30, 20, generator=torch.Generator().manual_seed(0))
    spec = shifts.ShiftSpec("lowrank", value=0.2, rank=3, decay=0.5)
    theta2 = shifts.shift_theta(theta, spec, torch.Generator().manual_seed(4))
    sigma = torch.linalg.svdvals(shifts.true_delta(theta, theta2).double())
    top = 0.2 * (30 * 20) ** 0.5
    assert_close(sigma[:3], torch.tensor([top, top / 2, top / 4], dtype=torch.float64), rtol=1e-5, atol=0)
    assert sigma[3:].max() < 1e-5 * top, "rank 3, nothing more"
    again = shifts.shift_theta(theta, spec, torch.Generator().manual_seed(4))
    assert torch.equal(theta2, again), "the same generator, the same shift"


@pytest.mark.parametrize("align", ["top", "bottom"])
def test_an_aligned_lowrank_shift_lies_in_the_bases_own_directions(align):
    """shift.align: ΔW*'s column and row spaces are W = θᵀ's top (or bottom) r singular
    subspaces (scipy's principal angles, 1e-5 rad), with the singular values asked for."""
    from scipy.linalg import subspace_angles

    theta = torch.randn(30, 20, generator=torch.Generator().manual_seed(0))
    spec = shifts.ShiftSpec("lowrank", value=0.2, rank=3, decay=0.5, align=align)
    delta = shifts.true_delta(theta, shifts.shift_theta(theta, spec, torch.Generator().manual_seed(4))).double()
    u, sigma, vt = torch.linalg.svd(delta)
    wu, _, wvt = torch.linalg.svd(theta.T.double(), full_matrices=False)
    part = slice(None, 3) if align == "top" else slice(-3, None)
    assert subspace_angles(u[:, :3].numpy(), wu[:, part].numpy()).max() < 1e-5
    assert subspace_angles(vt[:3].T.numpy(), wvt[part].T.numpy()).max() < 1e-5
    top = 0.2 * (30 * 20) ** 0.5
    assert_close(sigma[:3], torch.tensor([top, top / 2, top / 4], dtype=torch.float64), rtol=1e-5, atol=0)


def test_a_random_shift_is_full_rank_noise_of_the_given_size():
    theta = torch.zeros(200, 100)
    delta = shifts.true_delta(theta, shifts.shift_theta(theta, shifts.ShiftSpec("random", 0.3), torch.Generator().manual_seed(1)))
    assert abs(delta.std().item() - 0.3) < 0.01
    assert torch.linalg.matrix_rank(delta.double()).item() == 100
