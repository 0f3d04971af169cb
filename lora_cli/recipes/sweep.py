"""A sweep's trials as work: which share a base, which train together, and training a group.

Trials that share a pretraining config share one base. Trials that also share the finetune
data, the shift and the batch order (the adapter seed) form a group, and a group's adapters
that the batched engine trains (the methods it declares in train/engines.py) are trained
together as its lanes; the rest (DoRA, full fine-tuning, and PiSSA/OLoRA, whose frozen
residual differs per trial) run one by one on an engine that can.
No files, no printing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lora_cli.config.schemas import Config
from lora_cli.errors import ConfigError
from lora_cli.methods.inits import INITS
from lora_cli.methods.registry import method_of
from lora_cli.methods.spec import KEY_A, KEY_B
from lora_cli.recipes import data as drawn
from lora_cli.recipes import pipeline as recipe
from lora_cli.train.engines import choose_engine, why_not

BATCHED = "batched"


def pretrain_key(cfg: Config) -> str:
    """What decides the base: the data, the seed and the pretraining settings."""
    return _key({"seed": cfg.seed, "data": cfg.data.to_dict(), "pretrain": cfg.pretrain.to_dict()})


def group_key(cfg: Config) -> str:
    """What trials must share to train on the same rows: base, shift, finetune data, schedule,
    update rule and batch order (learning rates and the adapter itself may differ)."""
    ft = cfg.finetune
    shared = {"epochs": ft.epochs, "batch_size": ft.batch_size, "log_every": ft.log_every, "seed": recipe.adapter_seed(cfg)}
    if ft.n is not None:
        shared["n"] = ft.n
    if (ft.optimizer, ft.weight_decay, ft.schedule) != ("adam", 0.0, "constant"):  # the lanes' one update rule and schedule
        shared["optim"] = [ft.optimizer, ft.weight_decay, ft.momentum, ft.schedule, ft.warmup_epochs]
    return _key({"base": pretrain_key(cfg), "shift": cfg.shift.to_dict(), "finetune": shared})


def _key(value: dict[str, Any]) -> str:
    return json.dumps(value, sort_keys=True)


def not_batchable(cfg: Config) -> str | None:
    """Why the batched engine cannot train this trial's adapter, or None."""
    spec = cfg.adapter.spec()
    reason = why_not(BATCHED, spec.method)
    if reason:
        return reason
    if INITS[spec.init].changes_base:
        return f"{spec.init} freezes its own residual of the base, so it cannot share the base's cached residual"
    if KEY_A not in method_of(spec).trains and cfg.finetune.weight_decay:
        return "weight decay would move its frozen lora_A, which the batched engine holds still by a zero gradient"
    return None


@dataclass(frozen=True)
class Group:
    """Trials (by index into the sweep's list) trained in one go: as lanes of the batched
    engine (`engine` "batched") or alone on `engine`."""

    trials: tuple[int, ...]
    engine: str
    why: str | None = None  # why not batched


def plan(cfgs: list[Config], engine: str = "auto") -> list[Group]:
    """The groups that train `cfgs`: one batched group per shared (base, data, batch order),
    the trials it cannot take one by one after it, each on the engine --engine `engine`
    resolves for it. An engine other than auto runs every trial alone on that engine."""
    groups: dict[str, list[int]] = {}
    alone: list[Group] = []
    for i, cfg in enumerate(cfgs):
        why = not_batchable(cfg) if engine in ("auto", BATCHED) else f"--engine {engine} was asked for"
        if why is None:
            groups.setdefault(group_key(cfg), []).append(i)
        elif engine == BATCHED:
            raise ConfigError(f"--engine {BATCHED}: cannot train trial {i:03d}: {why}; use --engine auto, which trains it alone")
        else:
            alone.append(Group((i,), choose_engine(engine, cfg.adapter.method)[0], why))
    batched = [Group(tuple(members), BATCHED) for members in groups.values()]
    return batched + alone


def evaluations(schedule: Any) -> int:
    """Full-data evaluations the loop makes: epoch 0, every log_every-th epoch and the last."""
    return 1 + schedule.epochs // schedule.log_every + (schedule.epochs % schedule.log_every != 0)


@dataclass
class Problem:
    """What a group's trials share: θ, θ2 and the finetune data (X2, y2), made once, and the
    data's float64 moments and their residual for the group's base, each computed once when
    first asked for (the batched engine's losses, every trial's optimum)."""

    theta: Any
    theta2: Any
    x: Any
    y: Any
    _moments: Any = None
    _fit: tuple[Any, Any] | None = None  # (base, its Residual)

    @property
    def moments(self) -> Any:
        if self._moments is None:
            from lora_cli.core.moments import Moments

            self._moments = Moments.of(self.x, self.y)
        return self._moments

    def fit(self, base_weight: Any) -> Any:
        """The moments of R = y2 − X2·Wᵀ for the group's frozen base (core/moments.Residual)."""
        if self._fit is None or self._fit[0] is not base_weight:
            self._fit = (base_weight, self.moments.residual(base_weight))
        return self._fit[1]


def problem(cfg: Config) -> Problem:
    theta, theta2 = drawn.thetas(cfg)
    return Problem(theta, theta2, *drawn.regression(cfg, theta2, "finetune"))


def finetune_group(
    cfgs: list[Config], base_weight: Any, device: str = "cpu", on_epoch: Any = None, shared: Problem | None = None, on_logs: Any = ()
) -> list[recipe.FinetuneResult]:
    """Train the adapters of `cfgs` (one group: see `group_key`) together on the batched engine;
    one FinetuneResult per trial, in order, each with its own history and divergence.
    `shared`: the group's `problem`, when the caller has it already; `on_logs[i]` hears trial
    i's logged points as they are logged (train/loop.train_lanes)."""
    import torch

    from lora_cli.core.rng import generator
    from lora_cli.core.shifts import true_delta
    from lora_cli.train.batched import BatchedFinetune, Lane, use_moments
    from lora_cli.train.loop import train_lanes

    first, dev, data = cfgs[0], torch.device(device), shared or problem(cfgs[0])
    x, y = data.x.to(dev), data.y.to(dev)
    lanes = []
    for cfg in cfgs:
        spec = cfg.adapter.spec()
        method = method_of(spec)
        start, _ = recipe.adapter_start(cfg, spec, base_weight, lambda: data.fit(base_weight), lambda: data.x)
        lanes.append(Lane(spec, start[KEY_A].to(dev), start[KEY_B].to(dev), cfg.finetune.lr, KEY_A in method.trains))
    schedule = recipe.schedule(first.finetune)
    test = drawn.finetune_held_out(first, data.theta, data.theta2, device)
    lane_evaluations = len(lanes) * evaluations(schedule)
    known = data._moments is not None or any(cfg.finetune.optimum for cfg in cfgs)  # the optima read them
    fit = data.fit(base_weight) if use_moments(x.shape, y.shape[1], lane_evaluations, known) else None
    optim = first.finetune.optim(x.shape[0] // schedule.batch_size)
    engine = BatchedFinetune(base_weight.to(dev), lanes, x, y, schedule.batch_size, test, fit, optim)
    batches = generator(recipe.adapter_seed(first), "batches_finetune")
    fits = train_lanes(engine, schedule, batches, on_epoch, on_logs=on_logs)
    shift = true_delta(data.theta, data.theta2)
    return [
        recipe.FinetuneResult(
            lane.spec,
            {key: t.cpu() for key, t in adapter.items()}, {KEY_A: lane.lora_a.cpu(), KEY_B: lane.lora_b.cpu()}, shift, fit.history, fit.divergence,
            frozen=base_weight, theta2=data.theta2,
        )
        for adapter, lane, fit in zip(engine.adapters(), lanes, fits)
    ]


def group_optima(cfgs: list[Config], base_weight: Any, shared: Problem | None = None, starts: list[Any] | None = None) -> list[recipe.Optimum]:
    """Each trial's finetune optimum for one batched group (shared data, shift and frozen base):
    `recipe.finetune_optimum` from the group's one set of moments; for the methods whose floor
    is the rank-r one, every trial's rank at once from one projection and one eigendecomposition,
    for the others one by one from `starts` (each trial's params at step 0; drawn when not given)."""
    from lora_cli.core import floors

    data = shared or problem(cfgs[0])
    fit = data.fit(base_weight)
    target = data.theta2.T - base_weight
    specs = [cfg.adapter.spec() for cfg in cfgs]
    ranks = [spec.rank for spec in specs if method_of(spec).rank_floor]
    losses = iter(fit.floors(ranks))
    half = drawn.sigma_half(cfgs[0], "finetune")  # the group's fresh rows: x ~ N(0, Σ), Σ = half²
    population = iter(floors.population_floors(floors.whitened(target, half), ranks, cfgs[0].data.noise_std))
    optima = []
    for i, (cfg, spec) in enumerate(zip(cfgs, specs)):
        method = method_of(spec)
        if method.rank_floor:
            optima.append(recipe.Optimum(next(losses), next(population)))
            continue
        start = starts[i] if starts is not None else recipe.adapter_start(cfg, spec, base_weight, lambda: fit, lambda: data.x)[0]
        optima.append(recipe.Optimum(method.optimum(spec, fit, start), method.population(spec, target, cfg.data.noise_std, start, half)))
    return optima


def group_targets(cfg: Config, base_weight: Any, shared: Problem | None = None) -> tuple[Any, Any, Any]:
    """The true shift and the target θ2ᵀ − W with their SVDs, and the base with its left
    singular vectors, made once for a group's diagnostics."""
    from lora_cli.core.subspace import Base, Target
    from lora_cli.core.shifts import true_delta

    data = shared or problem(cfg)
    return Target.of(true_delta(data.theta, data.theta2)), Target.of(data.theta2.T - base_weight), Base.of(base_weight)
