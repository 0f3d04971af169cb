"""The 8x8 demo against the blog's printed table and against the SVD optimum."""

import pytest
import torch

from lora_cli.core import floors
from lora_cli.recipes import approx
from lora_cli.config.loading import ApproxConfig, load_config
from tests.conftest import CONFIGS

# the blog's table (seed 000): iteration -> loss as printed
BLOG = {0: "1.101851", 100: "0.526479", 200: "0.385436", 300: "0.385112", 400: "0.385105",
        500: "0.385104", 600: "0.385104", 700: "0.385104", 800: "0.385104", 900: "0.385104"}


@pytest.fixture(scope="module")
def default_run():
    cfg = ApproxConfig()
    problem = approx.make_problem(cfg)
    return cfg, problem, approx.fit(problem, cfg)


def test_shipped_config_is_the_default():
    assert load_config(CONFIGS / "approx.yaml", schema=ApproxConfig) == ApproxConfig()


def test_blog_table_digit_for_digit(default_run):
    _, _, result = default_run
    printed = {p.epoch: f"{p.loss:.6f}" for p in result.history.points}
    assert printed == BLOG
    improvement = {p.epoch: f"{100 * result.history.improvement(p.loss):.2f}%" for p in result.history.points}
    assert (improvement[100], improvement[200], improvement[900]) == ("52.22%", "65.02%", "65.05%")


def test_initial_problem_is_the_blogs(default_run):
    _, problem, _ = default_run
    torch.manual_seed(42)  # the blog's own order of draws, on the global generator
    w = torch.randn(8, 8)
    a = torch.randn(8, 2) / 2**0.5
    assert torch.equal(problem.target, w) and torch.equal(problem.a0, a)
    assert torch.equal(problem.b0, torch.zeros(2, 8))


def test_default_run_ends_at_the_optimum(default_run):
    cfg, problem, result = default_run
    assert result.final_loss == pytest.approx(floors.eckart_young(problem.target, cfg.rank), abs=1e-6)


def test_optimum_is_the_truncated_svd_loss():
    w = torch.randn(9, 6, generator=torch.Generator().manual_seed(5))
    u, s, vh = torch.linalg.svd(w.double())
    # independent: build the rank-2 truncation by hand and measure its MSE
    truncated = s[0] * torch.outer(u[:, 0], vh[0]) + s[1] * torch.outer(u[:, 1], vh[1])
    expected = ((w.double() - truncated) ** 2).mean().item()
    assert floors.eckart_young(w, 2) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("d_in, d_out, rank", [(16, 12, 3), (12, 16, 5), (10, 10, 1)])
def test_other_shapes_end_near_but_never_below_the_optimum(d_in, d_out, rank):
    cfg = ApproxConfig(d_in=d_in, d_out=d_out, rank=rank, iterations=4000, seed=7)
    problem = approx.make_problem(cfg)
    result = approx.fit(problem, cfg)
    optimum = floors.eckart_young(problem.target, rank)
    assert result.final_loss >= optimum - 1e-12
    assert result.final_loss <= 1.01 * optimum
    for point in result.history.points:
        assert point.loss >= optimum * (1 - 1e-6)


def test_full_rank_reaches_zero():
    cfg = ApproxConfig(d_in=6, d_out=5, rank=5, iterations=3000)
    problem = approx.make_problem(cfg)
    assert floors.eckart_young(problem.target, 5) < 1e-12
    assert approx.fit(problem, cfg).final_loss < 1e-6
