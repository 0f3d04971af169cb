"""Subspace diagnostics against matrices built with known angles, spectra and errors."""

import math

import pytest
import torch

from lora_cli.core.subspace import Diagnostics, compare, diagnose, principal_angles


def _rotated_plane(first: float, second: float) -> torch.Tensor:
    """An orthonormal basis of span(e1, e2) in R⁴ turned by `first` rad towards e3 and
    `second` rad towards e4: its principal angles with span(e1, e2) are exactly these."""
    basis = torch.zeros(4, 2, dtype=torch.float64)
    basis[0, 0], basis[2, 0] = math.cos(first), math.sin(first)
    basis[1, 1], basis[3, 1] = math.cos(second), math.sin(second)
    return basis


def test_principal_angles_are_exact_even_when_tiny():
    plane = torch.eye(4, dtype=torch.float64)[:, :2]
    tiny, wide = 1e-9, math.radians(30)
    angles = principal_angles(plane, _rotated_plane(tiny, wide))
    assert angles == pytest.approx([math.degrees(tiny), 30.0], rel=1e-9)
    cosines = torch.linalg.svdvals(plane.T @ _rotated_plane(tiny, wide))
    assert math.degrees(math.acos(min(1.0, cosines.max().item()))) == 0.0, "arccos loses the tiny angle"


def _matrix(sigma: list[float], d_out: int = 6, d_in: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d_out, len(sigma), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d_in, len(sigma), generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(sigma, dtype=torch.float64)) @ v.T


def test_the_truncation_captures_the_best_energy_with_the_eckart_young_error():
    truth = _matrix([3.0, 2.0, 1.0])
    u, s, vh = torch.linalg.svd(truth)
    best_rank_1 = s[0] * torch.outer(u[:, 0], vh[0])
    result = compare(best_rank_1, truth, 1)
    assert result.energy_captured == pytest.approx(9 / 14, rel=1e-12)
    assert result.best_energy == pytest.approx(9 / 14, rel=1e-12)
    assert result.relative_error == pytest.approx(math.sqrt(5 / 14), rel=1e-12)
    assert result.column_angles == pytest.approx([0.0], abs=1e-6) and result.row_angles == pytest.approx([0.0], abs=1e-6)
    assert result.singular_values == pytest.approx([3.0, 2.0, 1.0, 0.0, 0.0], rel=1e-12, abs=1e-12)


def test_an_update_in_the_wrong_subspace_captures_nothing_and_is_at_right_angles():
    truth = torch.zeros(4, 4, dtype=torch.float64)
    truth[0, 0] = 2.0
    wrong = torch.zeros(4, 4, dtype=torch.float64)
    wrong[1, 1] = 2.0
    result = compare(wrong, truth, 1)
    assert result.energy_captured == 0.0 and result.best_energy == 1.0
    assert result.relative_error == pytest.approx(math.sqrt(2))
    assert result.column_angles == pytest.approx([90.0]) and result.row_angles == pytest.approx([90.0])


def test_diagnose_counts_directions_and_stable_rank_and_round_trips():
    delta = _matrix([4.0, 3.0])
    shift = torch.outer(torch.randn(6), torch.randn(5))  # float32, rank 1: rounding must not add directions
    result = diagnose(delta, shift, delta, rank=4)
    assert result.rank == 2, "ΔW has two directions, though the adapter rank is 4"
    assert result.stable_rank == pytest.approx(25 / 16, rel=1e-12)
    assert len(result.shift.column_angles) == 1, "the true shift has one direction"
    assert result.target.relative_error == 0.0 and result.target.energy_captured == pytest.approx(1.0)
    assert Diagnostics.from_dict(result.to_dict()) == result


def test_angles_to_the_best_update_are_scipys_subspace_angles():
    """ΔW's top-k column and row spaces against those of the best rank-r update on fresh x ~ N(0, Σ),
    [D·Σ^½]_r·Σ^-½, both computed here in numpy and measured by scipy.linalg.subspace_angles."""
    import numpy as np
    from scipy.linalg import sqrtm, subspace_angles

    g = torch.Generator().manual_seed(3)
    d, w, delta = (torch.randn(8, 12, generator=g, dtype=torch.float64) for _ in range(3))
    m = torch.randn(12, 12, generator=g, dtype=torch.float64)
    sigma = m @ m.T / 12 + 0.1 * torch.eye(12, dtype=torch.float64)
    half = torch.from_numpy(np.real(sqrtm(sigma.numpy())))
    diag = diagnose(delta, d, d, 3, base=w, half=half)
    u, s, vt = np.linalg.svd(d.numpy() @ half.numpy())
    best = (u[:, :3] * s[:3]) @ vt[:3] @ np.linalg.inv(half.numpy())
    bu, _, bvt = np.linalg.svd(best)
    du, _, dvt = np.linalg.svd(delta.numpy())
    assert diag.optimum_column_angle == pytest.approx(math.degrees(subspace_angles(du[:, :3], bu[:, :3]).max()), abs=1e-9)
    assert diag.optimum_row_angle == pytest.approx(math.degrees(subspace_angles(dvt[:3].T, bvt[:3].T).max()), abs=1e-9)


def test_an_update_of_rounding_size_has_no_directions():
    """ΔW at float32 rounding of W (an update that starts at 0, at step 0) is compared on no directions."""
    g = torch.Generator().manual_seed(4)
    w, d = torch.randn(8, 12, generator=g), torch.randn(8, 12, generator=g)
    diag = diagnose(1e-9 * torch.randn(8, 12, generator=g), d, d, 3, base=w)
    assert diag.rank == 0 and diag.optimum_column_angle is None and diag.target.column_angles == []
