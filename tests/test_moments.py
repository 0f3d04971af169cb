"""The float64 moments every optimum and the batched engine read, held to dense float64
computations on the same float32 data, and the diagnostics of a low-rank ΔW from its thin
factors held to a dense SVD of the same ΔW."""

import math

import pytest
import torch
from torch.testing import assert_close

from lora_cli.core.moments import Moments
from lora_cli.core.subspace import diagnose


def _data(n: int, d_in: int, d_out: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g)
    return x, x @ torch.randn(d_in, d_out, generator=g) + 0.1 * torch.randn(n, d_out, generator=g)


def _close(got: torch.Tensor, dense: torch.Tensor, rel: float) -> None:
    """Each entry within `rel` of the dense matrix's largest entry (off-diagonal sums of random
    products are near 0, so their own relative error is not the measure)."""
    assert_close(got, dense, rtol=0, atol=rel * dense.abs().max().item())


@pytest.mark.parametrize("block", [1, 7, 256, 1024, 10_000])  # one row, uneven blocks, one block larger than the data
def test_blocked_moments_equal_the_dense_float64_products(block):
    x, y = _data(1000, 37, 23)
    m = Moments.of(x, y, block)
    x64, y64 = x.double(), y.double()
    _close(m.xtx, x64.T @ x64, 1e-10)
    _close(m.xty, x64.T @ y64, 1e-10)
    assert m.yy == pytest.approx(y64.square().sum().item(), rel=1e-10) and m.count == 1000


def test_residual_moments_equal_those_of_the_dense_float64_residual():
    x, y = _data(800, 30, 20, seed=1)
    w = torch.randn(20, 30, generator=torch.Generator().manual_seed(2))
    fit = Moments.of(x, y, 128).residual(w)
    r = y.double() - x.double() @ w.double().T
    _close(fit.xtr, x.double().T @ r, 1e-10)
    assert fit.rr == pytest.approx(r.square().sum().item(), rel=1e-10) and fit.numel == r.numel()


def _dense_floor(x: torch.Tensor, r: torch.Tensor, rank: int | None) -> float:
    """Reduced-rank regression from the data itself: an orthonormal basis of x's columns (SVD of
    x, no moments), then the top singular values of the projection."""
    u, s, _ = torch.linalg.svd(x, full_matrices=False)
    q = u[:, s > s.max() * max(x.shape) * torch.finfo(torch.float64).eps]
    projected = q.T @ r
    energy = torch.linalg.svdvals(projected).square()
    explained = energy.sum() if rank is None else energy[:rank].sum()
    return (r.square().sum() - explained).item() / r.numel()


@pytest.mark.parametrize("n", [500, 20])  # more rows than inputs, and fewer (XᵀX singular: its eigenbasis stands in)
@pytest.mark.parametrize("rank", [1, 3, None])
def test_floors_from_moments_equal_the_dense_reduced_rank_regression(n, rank):
    x, y = _data(n, 30, 12, seed=n)
    w = torch.randn(12, 30, generator=torch.Generator().manual_seed(5))
    r = y.double() - x.double() @ w.double().T
    got = Moments.of(x, y).residual(w).floors([rank])[0]
    assert got == pytest.approx(_dense_floor(x.double(), r, rank), abs=1e-10 * r.square().mean().item())


def test_floors_in_frozen_rows_equal_least_squares_on_the_projected_inputs():
    """LoRA-FA's floor: least squares of R on X·A₀ᵀ, from XᵀX and XᵀR alone."""
    x, y = _data(400, 25, 10, seed=3)
    rows = torch.randn(4, 25, generator=torch.Generator().manual_seed(6))
    z = x.double() @ rows.double().T
    solution = torch.linalg.lstsq(z, y.double()).solution
    expected = (y.double() - z @ solution).square().mean().item()
    assert Moments.of(x, y).residual().floors([None], rows=rows)[0] == pytest.approx(expected, rel=1e-10)


def _diagnostics(left: torch.Tensor, right: torch.Tensor, factored: bool):
    g = torch.Generator().manual_seed(11)
    d_out, d_in = left.shape[0], right.shape[1]
    shift = torch.randn(d_out, 3, generator=g, dtype=torch.float64) @ torch.randn(3, d_in, generator=g, dtype=torch.float64)
    target = shift + 0.01 * torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    delta = left.double() @ right.double()  # the same ΔW for both: its exact product
    return diagnose(delta, shift, target, right.shape[0], factors=(left, right) if factored else None)


def _same(a, b) -> None:
    assert a.rank == b.rank
    scale = 1e-8 * max(b.singular_values[:1] + [1e-300])
    # the factors give ΔW's r singular values; a dense SVD also lists its exact zeros (as rounding)
    assert a.singular_values == pytest.approx(b.singular_values[: len(a.singular_values)], abs=scale)
    assert all(abs(v) <= scale for v in b.singular_values[len(a.singular_values) :])
    assert a.stable_rank == pytest.approx(b.stable_rank, rel=1e-8, abs=1e-12)
    for mine, dense in ((a.shift, b.shift), (a.target, b.target)):
        assert mine.column_angles == pytest.approx(dense.column_angles, abs=1e-6)
        assert mine.row_angles == pytest.approx(dense.row_angles, abs=1e-6)
        assert mine.energy_captured == pytest.approx(dense.energy_captured, rel=1e-8, abs=1e-12)
        assert mine.relative_error == pytest.approx(dense.relative_error, rel=1e-10)


@pytest.mark.parametrize("rank", [1, 2, 4, 8, 16, 33, 64])
def test_diagnostics_from_the_thin_factors_equal_those_of_a_dense_svd(rank):
    g = torch.Generator().manual_seed(rank)
    left, right = 0.7 * torch.randn(48, rank, generator=g), torch.randn(rank, 40, generator=g)  # rank 64 > d: r exceeds both sides
    _same(_diagnostics(left, right, True), _diagnostics(left, right, False))


def test_diagnostics_of_b_zero_at_init_are_the_same_from_factors():
    """LoRA's first step: B = 0, so ΔW = 0 has no directions; angles are empty, the error 100 %."""
    left, right = torch.zeros(48, 4), torch.randn(4, 40, generator=torch.Generator().manual_seed(1))
    factored, dense = _diagnostics(left, right, True), _diagnostics(left, right, False)
    _same(factored, dense)
    assert factored.rank == 0 and factored.shift.column_angles == [] and math.isclose(factored.shift.relative_error, 1.0)
