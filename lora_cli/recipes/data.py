"""The problem's data, drawn from the config's seeds: θ and θ2, the training rows of each
split, the held-out rows a stage is measured on, and the inputs' covariance Σ.

Every draw has a stream of its own (core/rng.py), so a stage regenerates exactly what it
needs and switching held-out rows or a covariance on changes no other draw.
"""

from __future__ import annotations

import functools

import torch

from lora_cli.config.schemas import Config
from lora_cli.config.stages import ADAPTED, BASE_STAGE
from lora_cli.core.covariances import Covariance, CovarianceSpec, covariance
from lora_cli.core.data import make_regression, make_theta
from lora_cli.core.rng import generator
from lora_cli.core.shifts import ShiftSpec, shift_theta


def thetas(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """(θ, θ2), each (d_in, d_out)."""
    theta = make_theta(cfg.data.d_in, cfg.data.d_out, generator(cfg.seed, "theta"))
    sh = cfg.shift
    spec = ShiftSpec(sh.kind, sh.value, sh.rank, sh.decay, sh.align)
    return theta, shift_theta(theta, spec, generator(cfg.seed, "shift"))


def input_covariance(cfg: Config, split: str) -> Covariance | None:
    """Σ of the "pretrain" (source) or "finetune" (target) split's inputs; None for x ~ N(0, I).
    The target's is the source's unless shift.covariance names its own (drawn from its own stream)."""
    target = cfg.shift.covariance
    own = split == ADAPTED and target.kind != "same"
    spec = (target if own else cfg.data.covariance).spec()
    if spec.kind == "isotropic":
        return None
    return _covariance(cfg.seed, cfg.data.d_in, cfg.data.d_out, spec, "covariance_target" if own else "covariance_source")


@functools.lru_cache(maxsize=8)
def _covariance(seed: int, d_in: int, d_out: int, spec: CovarianceSpec, stream: str) -> Covariance:
    """Σ, made once per process: a stage's rows, held-out rows, optimum and diagnostics all ask
    (an aligned Σ costs an SVD of θ). Callers only read it."""
    theta = make_theta(d_in, d_out, generator(seed, "theta"))  # the base's θ: what `align` refers to
    return covariance(spec, theta, generator(seed, stream))


def input_sigma(cfg: Config, split: str) -> torch.Tensor:
    """Σ of the split's inputs as a matrix, float64: the identity for x ~ N(0, I)."""
    sigma = input_covariance(cfg, split)
    return sigma.matrix() if sigma is not None else torch.eye(cfg.data.d_in, dtype=torch.float64)


def regression(cfg: Config, theta: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(X, y) of the "pretrain" or "finetune" split (cfg.rows(split) rows), each with its own streams."""
    g_x, g_noise = generator(cfg.seed, f"x_{split}"), generator(cfg.seed, f"noise_{split}")
    return make_regression(cfg.rows(split), theta, g_x, g_noise, cfg.data.noise_std, _factor(cfg, split))


def _factor(cfg: Config, split: str) -> torch.Tensor | None:
    sigma = input_covariance(cfg, split)
    return None if sigma is None else sigma.factor()


def held_out(cfg: Config, theta: torch.Tensor, split: str, device: str = "cpu") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{"test": (X, y)}: data.n_test fresh rows of the split, from streams of their own (so
    switching them on or off changes no trained number); {} when data.n_test is 0."""
    if cfg.data.n_test == 0:
        return {}
    return {"test": _fresh_rows(cfg, theta, (f"x_test_{split}", f"noise_test_{split}"), split, device)}


def _fresh_rows(cfg: Config, theta: torch.Tensor, streams: tuple[str, str], inputs: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """data.n_test rows (X, y = X·θ + noise) from the two `streams`, X drawn as split `inputs`' are."""
    g_x, g_noise = (generator(cfg.seed, purpose) for purpose in streams)
    x, y = make_regression(cfg.data.n_test, theta, g_x, g_noise, cfg.data.noise_std, _factor(cfg, inputs))
    return x.to(device), y.to(device)


def finetune_held_out(cfg: Config, theta: torch.Tensor, theta2: torch.Tensor, device: str = "cpu") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """What a finetune is evaluated on besides its training rows, data.n_test rows each: "test"
    (fresh rows of the shifted task) and "source" (fresh rows of the pretraining task: source
    inputs and the original θ, so source_loss measures forgetting); {} when data.n_test is 0."""
    sets = held_out(cfg, theta2, ADAPTED, device)
    if cfg.data.n_test:
        sets["source"] = _fresh_rows(cfg, theta, ("x_source", "noise_source"), BASE_STAGE, device)
    return sets


def sigma_half(cfg: Config, split: str) -> torch.Tensor | None:
    """Σ^½ of the split's inputs, float64; None for x ~ N(0, I)."""
    sigma = input_covariance(cfg, split)
    return None if sigma is None else sigma.sqrt()
