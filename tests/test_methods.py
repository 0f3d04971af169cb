"""The method registry: each method's optimum against an independent computation, LoRA-FA's
frozen lora_A on every engine, full fine-tuning against least squares, and engines that train
only what they declare."""

import pytest
import torch
from torch.testing import assert_close

from lora_cli.core import floors
from lora_cli.errors import ConfigError
from lora_cli.core.moments import Moments
from lora_cli.methods.registry import METHODS
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_W, AdapterSpec
from lora_cli.recipes import data as drawn
from lora_cli.recipes import pipeline
from lora_cli.train.engines import ENGINES, EngineEntry, Runtime, choose_engine, engine_entry, why_not
from tests.conftest import tiny_config

# a small problem with noise and a full-rank shift, so that every optimum is well above 0
PROBLEM = {"data.noise_std": 0.1, "shift.kind": "random", "shift.value": 0.3, "adapter.rank": 2, "adapter.alpha": 2.0}
# a long run: every step on all 512 rows, so Adam's steps carry no sampling noise
LONG = {"finetune.epochs": 2000, "finetune.lr": 3e-3, "finetune.log_every": 500, "finetune.batch_size": 512}


def _lbfgs_floor(u: torch.Tensor, r: torch.Tensor, scaling: float) -> float:
    """min over B of mean((R − s·U·Bᵀ)²) by L-BFGS in float64: an iterative solve, no closed form."""
    b = torch.zeros(r.shape[1], u.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([b], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = ((r - scaling * u @ b.T) ** 2).mean()
        value.backward()
        return value

    for _ in range(5):
        opt.step(loss)
    return loss().item()


def test_lora_fa_optimum_equals_an_iterative_solve():
    cfg = tiny_config(**PROBLEM, **{"adapter.method": "lora_fa"})
    base = pipeline.pretrain(cfg).weight
    spec, method = cfg.adapter.spec(), METHODS["lora_fa"]
    start, frozen = method.start(base, spec, torch.Generator().manual_seed(4))
    x, y = drawn.regression(cfg, drawn.thetas(cfg)[1], "finetune")
    residual = y.double() - x.double() @ frozen.double().T
    fit = Moments.of(x, y).residual(frozen)
    closed = method.optimum(spec, fit, start)
    iterative = _lbfgs_floor(x.double() @ start[KEY_A].double().T, residual, spec.scaling)
    assert closed == pytest.approx(iterative, rel=1e-8)
    assert closed > METHODS["lora"].optimum(spec, fit, start)  # a frozen A is a smaller class than rank-r


def test_lora_fa_population_floor_equals_the_normal_equations():
    g = torch.Generator().manual_seed(0)
    d, rows = torch.randn(6, 9, generator=g, dtype=torch.float64), torch.randn(3, 9, generator=g, dtype=torch.float64)
    m = d @ rows.T @ torch.linalg.inv(rows @ rows.T)  # argmin ‖D − M·A₀‖
    expected = 0.2**2 + ((d - m @ rows) ** 2).sum().item() / 6
    assert floors.population_floor_in_rows(d.float(), rows.float(), 0.2) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_lora_fa_keeps_lora_a_bit_identical_and_reaches_its_optimum(engine):
    cfg = tiny_config(**PROBLEM, **LONG, **{"adapter.method": "lora_fa"})
    base = pipeline.pretrain(cfg).weight
    result = pipeline.finetune(cfg, base, Runtime(engine))
    assert torch.equal(result.adapter[KEY_A], result.initial[KEY_A])
    assert not torch.equal(result.adapter[KEY_B], result.initial[KEY_B])
    optimum = pipeline.finetune_optimum(cfg, base).loss
    assert min(p.loss for p in result.history.points) >= optimum * (1 - 1e-6)  # float32 evaluation: a rounding's room
    assert result.history.final == pytest.approx(optimum, rel=1e-3)


def test_frozen_b_optimum_equals_an_iterative_solve():
    """min over A of mean((R − s·X·Aᵀ·B₀ᵀ)²) by L-BFGS in float64, against the closed form in B₀'s columns."""
    cfg = tiny_config(**PROBLEM, **{"adapter.method": "lora_fb"})
    base = pipeline.pretrain(cfg).weight
    spec, method = cfg.adapter.spec(), METHODS["lora_fb"]
    start, frozen = method.start(base, spec, torch.Generator().manual_seed(4))
    assert torch.equal(start[KEY_A], torch.zeros_like(start[KEY_A])) and start[KEY_B].abs().min() > 0  # ΔW = 0, B₀ random
    x, y = drawn.regression(cfg, drawn.thetas(cfg)[1], "finetune")
    x64, b0 = x.double(), start[KEY_B].double()
    residual = y.double() - x64 @ frozen.double().T
    a = torch.zeros(spec.rank, x.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a], lr=1, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = ((residual - spec.scaling * (x64 @ a.T) @ b0.T) ** 2).mean()
        value.backward()
        return value

    for _ in range(5):
        opt.step(loss)
    closed = method.optimum(spec, Moments.of(x, y).residual(frozen), start)
    assert closed == pytest.approx(loss().item(), rel=1e-8)


def test_frozen_b_population_floor_equals_the_projection():
    g = torch.Generator().manual_seed(0)
    d, cols = torch.randn(6, 9, generator=g, dtype=torch.float64), torch.randn(6, 2, generator=g, dtype=torch.float64)
    m = torch.linalg.inv(cols.T @ cols) @ cols.T @ d  # argmin ‖D − B₀·M‖
    expected = 0.2**2 + ((d - cols @ m) ** 2).sum().item() / 6
    assert floors.population_floor_in_columns(d.float(), cols.float(), 0.2) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_frozen_b_keeps_lora_b_bit_identical_and_reaches_its_optimum(engine):
    cfg = tiny_config(**PROBLEM, **LONG, **{"adapter.method": "lora_fb", "adapter.init": "kaiming"})
    base = pipeline.pretrain(cfg).weight
    result = pipeline.finetune(cfg, base, Runtime(engine))
    assert torch.equal(result.adapter[KEY_B], result.initial[KEY_B])
    assert not torch.equal(result.adapter[KEY_A], result.initial[KEY_A])
    optimum = pipeline.finetune_optimum(cfg, base)
    assert min(p.loss for p in result.history.points) >= optimum.loss * (1 - 1e-6)
    assert result.history.final == pytest.approx(optimum.loss, rel=1e-3)
    assert optimum.loss > METHODS["lora"].optimum(cfg.adapter.spec(), Moments.of(*result.data).residual(base), result.initial)


def test_frozen_b_trains_the_same_on_both_engines():
    cfg = tiny_config(**PROBLEM, **{"adapter.method": "lora_fb", "finetune.epochs": 6, "finetune.log_every": 2})
    base = pipeline.pretrain(cfg).weight
    fast, ref = (pipeline.finetune(cfg, base, Runtime(e)) for e in ("fast", "reference"))
    assert_close(fast.adapter[KEY_A], ref.adapter[KEY_A], rtol=0, atol=1e-5)
    assert torch.equal(fast.adapter[KEY_B], ref.adapter[KEY_B])


def test_frozen_b_refuses_an_init_that_changes_the_base():
    with pytest.raises(ConfigError, match="adapter.init = 'pissa' is not allowed with lora_fb"):
        tiny_config(**{"adapter.method": "lora_fb", "adapter.init": "pissa"})


def test_full_fine_tuning_reaches_least_squares_and_never_goes_below():
    cfg = tiny_config(**PROBLEM, **LONG, **{"adapter.method": "full"})
    base = pipeline.pretrain(cfg).weight
    result = pipeline.finetune(cfg, base, Runtime("fast"))
    x, y = drawn.regression(cfg, drawn.thetas(cfg)[1], "finetune")
    w_star = torch.linalg.lstsq(x.double(), y.double()).solution  # (d_in, d_out), an independent least squares
    lstsq = ((y.double() - x.double() @ w_star) ** 2).mean().item()
    optimum = pipeline.finetune_optimum(cfg, base)
    assert optimum.loss == pytest.approx(lstsq, rel=1e-10)
    assert optimum.population == pytest.approx(0.1**2)
    assert min(p.loss for p in result.history.points) >= optimum.loss * (1 - 1e-6)  # float32 evaluation: a rounding's room
    assert result.history.final == pytest.approx(optimum.loss, rel=1e-3)
    assert set(result.adapter) == {KEY_W}


def test_full_fine_tuning_trains_the_same_on_both_engines():
    cfg = tiny_config(**PROBLEM, **{"adapter.method": "full", "finetune.epochs": 6, "finetune.log_every": 2})
    base = pipeline.pretrain(cfg).weight
    fast, ref = (pipeline.finetune(cfg, base, Runtime(e)) for e in ("fast", "reference"))
    assert_close(fast.adapter[KEY_W], ref.adapter[KEY_W], rtol=0, atol=1e-5)


def test_engines_train_only_the_methods_they_declare():
    assert EngineEntry("nothing").trains == {}  # the default is none: a new method is refused until declared
    assert why_not("fast", "dora") == "it has no hand-written DoRA gradients"
    assert choose_engine("auto", "dora")[0] == "reference"
    assert choose_engine("auto", "lora_fa")[0] == choose_engine("auto", "full")[0] == "fast"
    with pytest.raises(ConfigError, match="--engine batched: trains a sweep's trials together; for one run use --engine fast or reference"):
        engine_entry("batched", "lora")
    assert why_not("batched", "full") == "its stacked gradients have no full fine-tuning term"
    with pytest.raises(ConfigError, match="--engine fast: cannot train this adapter: it has no hand-written DoRA gradients; use --engine reference"):
        engine_entry("fast", "dora")
    assert set(ENGINES["batched"].trains) == {"lora", "lora_fa"}


def test_every_method_counts_what_it_trains():
    d_in, d_out, spec = 7, 5, AdapterSpec(2, 1.0)
    counts = {name: m.parameter_count(spec, d_in, d_out) for name, m in METHODS.items()}
    assert counts == {"lora": 2 * (7 + 5), "dora": 2 * (7 + 5) + 5, "lora_fa": 5 * 2, "lora_fb": 2 * 7, "vera": 2 + 5, "full": 35}
    assert {KEY_B} == set(METHODS["lora_fa"].trains)
