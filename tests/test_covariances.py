"""Input covariances, held to independent computations: the sample covariance of 10⁵ drawn
rows, θ's own SVD for the alignment, alternating least squares for every optimum on
anisotropic inputs (the data's and the population's), and bytes for the isotropic default."""

import pytest
import torch

from lora_cli.core.covariances import COVARIANCES, CovarianceSpec, covariance
from lora_cli.core.data import make_regression, make_theta
from lora_cli.core.floors import population_floor, population_floor_in_rows, whitened
from lora_cli.core.moments import Moments
from lora_cli.core.rng import generator
from lora_cli.recipes import data as drawn
from lora_cli.recipes import pipeline as recipe
from tests.conftest import tiny_config

D = 16
SPECS = [CovarianceSpec("power_law", decay=1.5, align=a) for a in ("random", "top", "bottom")] + [
    CovarianceSpec("spiked", spikes=3, strength=20.0, align=a) for a in ("random", "top")]


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.kind}-{s.align}")
def test_drawn_rows_have_the_covariance_within_2_percent(spec):
    theta = make_theta(D, 12, _g(0))
    sigma = covariance(spec, theta, _g(1))
    matrix = sigma.matrix()
    assert torch.trace(matrix).item() == pytest.approx(D, rel=1e-12)  # the isotropic total power
    assert torch.allclose(sigma.basis.T @ sigma.basis, torch.eye(D, dtype=torch.float64), atol=1e-12)
    x, _ = make_regression(100_000, theta, _g(2), _g(3), factor=sigma.factor())
    sample = (x.double().T @ x.double()) / x.shape[0]
    assert (torch.linalg.norm(sample - matrix) / torch.linalg.norm(matrix)).item() < 0.02
    assert torch.allclose(sigma.sqrt() @ sigma.sqrt(), matrix, atol=1e-10)


def test_top_and_bottom_put_the_strongest_inputs_along_thetas_top_and_bottom_directions():
    theta = make_theta(D, 12, _g(0))
    u, _, _ = torch.linalg.svd(theta.double(), full_matrices=True)
    for align, direction in (("top", u[:, 0]), ("bottom", u[:, -1])):
        matrix = covariance(CovarianceSpec("power_law", decay=2.0, align=align), theta, _g(1)).matrix()
        assert (direction @ matrix @ direction).item() == pytest.approx(torch.linalg.eigvalsh(matrix).max().item(), rel=1e-10)


def test_isotropic_inputs_are_drawn_exactly_as_before():
    cfg = tiny_config()
    theta = drawn.thetas(cfg)[0]
    assert drawn.input_covariance(cfg, "pretrain") is None and drawn.input_covariance(cfg, "finetune") is None
    x, _ = drawn.regression(cfg, theta, "pretrain")
    assert torch.equal(x, torch.randn(cfg.data.n, cfg.data.d_in, generator=generator(cfg.seed, "x_pretrain")))
    assert set(COVARIANCES) == {"isotropic", "power_law", "spiked"}


def test_the_target_takes_the_sources_covariance_unless_it_names_its_own():
    same = tiny_config(**{"data.covariance.kind": "spiked", "data.covariance.spikes": 2})
    source, target = drawn.input_covariance(same, "pretrain"), drawn.input_covariance(same, "finetune")
    assert torch.equal(source.matrix(), target.matrix())
    own = tiny_config(**{"data.covariance.kind": "spiked", "shift.covariance.kind": "power_law", "shift.covariance.align": "top"})
    assert not torch.allclose(drawn.input_covariance(own, "pretrain").matrix(), drawn.input_covariance(own, "finetune").matrix())


def _als_population(d: torch.Tensor, sigma: torch.Tensor, rank: int, iterations: int = 4000) -> torch.Tensor:
    """min over rank-r B·A of tr((D − B·A)·Σ·(D − B·A)ᵀ)/d_out, by alternating exact minimisation."""
    a = torch.randn(rank, d.shape[1], generator=_g(5), dtype=torch.float64)
    for _ in range(iterations):
        b = d @ sigma @ a.T @ torch.linalg.inv(a @ sigma @ a.T)  # given A: the weighted least squares
        a = torch.linalg.solve(b.T @ b, b.T @ d)  # given B: Σ drops out (it weights every column alike)
    e = d - b @ a
    return torch.trace(e @ sigma @ e.T) / d.shape[0]


@pytest.mark.parametrize("spec", SPECS[:2] + SPECS[3:4], ids=lambda s: f"{s.kind}-{s.align}")
def test_the_population_floors_under_a_covariance_are_what_optimisation_reaches(spec):
    theta = make_theta(D, 12, _g(0))
    sigma = covariance(spec, theta, _g(1))
    target = torch.randn(12, D, generator=_g(4), dtype=torch.float64)  # D = θ2ᵀ − W, (d_out, d_in)
    half = sigma.sqrt()
    for rank in (1, 3):
        expected = _als_population(target, sigma.matrix(), rank).item() + 0.01
        assert population_floor(whitened(target, half), rank, 0.1) == pytest.approx(expected, rel=1e-8)
    rows = torch.randn(3, D, generator=_g(6), dtype=torch.float64)  # LoRA-FA: ΔW = M·A₀, A₀ fixed
    s = sigma.matrix()
    m = target @ s @ rows.T @ torch.linalg.inv(rows @ s @ rows.T)
    e = target - m @ rows
    expected = (torch.trace(e @ s @ e.T) / 12).item() + 0.01
    assert population_floor_in_rows(whitened(target, half), whitened(rows, half), 0.1) == pytest.approx(expected, rel=1e-8)


def _als_data(x: torch.Tensor, r: torch.Tensor, rank: int, iterations: int = 3000) -> float:
    """min over rank-r ΔW of ‖R − X·ΔWᵀ‖²/numel, alternating exact least squares (B kept orthonormal)."""
    b = torch.linalg.qr(torch.randn(r.shape[1], rank, generator=_g(7), dtype=torch.float64))[0]
    for _ in range(iterations):
        a_t = torch.linalg.lstsq(x, r @ b).solution  # given orthonormal B: Aᵀ = argmin ‖R·B − X·Aᵀ‖
        b = torch.linalg.qr(torch.linalg.lstsq(x @ a_t, r).solution.T)[0]
    a_t = torch.linalg.lstsq(x, r @ b).solution
    return ((r - x @ a_t @ b.T) ** 2).mean().item()


def test_the_finetune_optimum_on_anisotropic_inputs_is_what_optimisation_reaches():
    cfg = tiny_config(**{"data.covariance.kind": "power_law", "data.covariance.decay": 2.0, "data.covariance.align": "top",
                         "shift.kind": "random", "data.noise_std": 0.1, "adapter.rank": 2})
    base = torch.randn(cfg.data.d_out, cfg.data.d_in, generator=_g(8)) * 0.3 + drawn.thetas(cfg)[0].T
    optimum = recipe.finetune_optimum(cfg, base)
    x, y = drawn.regression(cfg, drawn.thetas(cfg)[1], "finetune")
    r = y.double() - x.double() @ base.double().T
    assert optimum.loss == pytest.approx(_als_data(x.double(), r, 2), rel=1e-8)
    sigma = drawn.input_covariance(cfg, "finetune").matrix()
    d = drawn.thetas(cfg)[1].T.double() - base.double()
    assert optimum.population == pytest.approx(_als_population(d, sigma, 2).item() + 0.01, rel=1e-8)
    assert Moments.of(x, y).residual(base).floors([2])[0] == optimum.loss


def test_too_many_spikes_is_one_config_error():
    from lora_cli.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        tiny_config(**{"data.covariance.kind": "spiked", "data.covariance.spikes": 40})
    assert "data.covariance.spikes" in str(caught.value) and "≤ data.d_in = 33" in str(caught.value)
