"""The blog's three stages as functions of (config, tensors) -> typed results: no files, no printing.

This is where a config meets the pure core: it picks the seeds and specs out of the config
and asks core/ for data, shift and init, and train/ for an engine and the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from lora_cli.config.schemas import Config, TrainConfig
from lora_cli.config.stages import ADAPTED, BASE_STAGE, Stage
from lora_cli.core import subspace
from lora_cli.core.moments import Moments
from lora_cli.core.data import init_linear_weight
from lora_cli.core.rng import generator
from lora_cli.core.shifts import true_delta
from lora_cli.recipes.data import finetune_held_out, held_out, input_sigma, regression, sigma_half, thetas
from lora_cli.methods.registry import merge as merge_params
from lora_cli.methods.registry import method_of
from lora_cli.methods.spec import KEY_A, KEY_B, KEY_W, AdapterSpec
from lora_cli.train.engines import PRETRAIN, Runtime, Task, build
from lora_cli.train.loop import CheckpointCallback, Divergence, EpochCallback, History, LogCallback, Schedule, TrainState, train


Data = tuple[torch.Tensor, torch.Tensor]  # (X (n, d_in), y (n, d_out)), float32 on the CPU


@dataclass
class PretrainResult:
    weight: torch.Tensor  # (d_out, d_in)
    history: History
    divergence: Divergence | None = None
    data: Data | None = None  # the rows it trained on, for its optimum's moments (nothing drawn again)


@dataclass
class FinetuneResult:
    spec: AdapterSpec  # what was trained, as the config built it once
    adapter: dict[str, torch.Tensor]  # the method's params as trained (PEFT keys for the LoRA family)
    initial: dict[str, torch.Tensor]  # the same keys at step 0 (PiSSA's export needs them)
    true_delta: torch.Tensor  # ΔW* = (θ2 − θ)ᵀ (d_out, d_in), what the adapter should learn
    history: History
    divergence: Divergence | None = None
    frozen: torch.Tensor | None = None  # the weight it trained on (PiSSA's and OLoRA's residual of W)
    theta2: torch.Tensor | None = None  # θ2 (d_in, d_out): the diagnostics' target θ2ᵀ − W
    data: Data | None = None  # the rows it trained on, for its optimum's moments

    @property
    def lora_A(self) -> torch.Tensor:  # the LoRA family's factors, by their PEFT keys
        return self.adapter[KEY_A]

    @property
    def lora_B(self) -> torch.Tensor:
        return self.adapter[KEY_B]


@dataclass
class MergeResult:
    merged: torch.Tensor  # (d_out, d_in)
    delta: torch.Tensor  # ΔW = W' − W (scaling·B·A for LoRA), (d_out, d_in)
    base_loss: float  # MSE of the frozen base on the shifted data
    adapter_loss: float  # MSE of base + adapter
    merged_loss: float  # MSE of the merged weight
    max_abs_diff: float  # max |merged(x) − adapter(x)| over the shifted data
    test_loss: float | None = None  # MSE of the merged weight on the finetune split's held-out rows
    source_loss: float | None = None  # ... on fresh rows of the pretraining task: what the finetune forgot


def adapter_seed(cfg: Config) -> int:
    """finetune.seed (adapter init and finetune batches), the top-level seed when unset."""
    return cfg.seed if cfg.finetune.seed is None else cfg.finetune.seed


@dataclass
class Optimum:
    """The best loss any allowed update could reach, computed in float64 apart from training."""

    loss: float  # on the training data: what the stage's final loss is measured against
    population: float | None = None  # expected on fresh data (finetune: σ² + Σ_{i>r} σᵢ(θ2ᵀ − W)²/d_out)
    seconds: float | None = None  # its share of work done before it was asked for (a sweep group's moments)


def pretrain_optimum(cfg: Config, data: Data | None = None) -> Optimum:
    """Least squares: the lowest full-data MSE any W reaches on the pretraining data (`data`,
    the rows the stage trained on, when given; else drawn again)."""
    x, y = data or regression(cfg, thetas(cfg)[0], "pretrain")
    return Optimum(Moments.of(x, y).residual().floors([None])[0])


def finetune_optimum(cfg: Config, base_weight: torch.Tensor, result: FinetuneResult | None = None) -> Optimum:
    """The lowest full-data MSE any update of the method's kind reaches from the frozen base
    (for LoRA, reduced-rank regression; PiSSA's and OLoRA's residual is the frozen base) on
    the finetune data, and its population value. From `result`'s rows, start and frozen
    weight when it has them; else everything is drawn again from the config."""
    if result is not None and result.data is not None:
        spec, start, frozen, theta2, data = result.spec, result.initial, result.frozen, result.theta2, result.data
        moments = Moments.of(*data)
    else:
        theta2, spec = thetas(cfg)[1], cfg.adapter.spec()
        data = regression(cfg, theta2, "finetune")
        moments = Moments.of(*data)  # once: a gradient init's start reads it too
        start, frozen = adapter_start(cfg, spec, base_weight, lambda: moments.residual(base_weight), lambda: data[0])
    return adapter_optimum(spec, moments, frozen, start, theta2, cfg.data.noise_std, sigma_half(cfg, ADAPTED))


def adapter_start(cfg: Config, spec: AdapterSpec, base_weight: torch.Tensor, fit: Callable[[], Any], inputs: Callable[[], torch.Tensor]
                  ) -> tuple[dict, torch.Tensor]:
    """(params at step 0, the weight to freeze) of spec's method on `base_weight`, drawn from the
    adapter seed. A data-aware init (methods/inits.py) reads, only when it asks: ∇_W L at W on
    every finetune row (from `fit()`, their residual moments for that W), the finetune inputs
    (`inputs()`) or the pretraining inputs (drawn again from the config)."""
    from lora_cli.methods.inits import InitData

    data = InitData(lambda: fit().gradient().float(), inputs, lambda: regression(cfg, thetas(cfg)[0], BASE_STAGE)[0])
    return method_of(spec).start(base_weight, spec, generator(adapter_seed(cfg), "init_adapter"), data)


def adapter_optimum(spec: AdapterSpec, moments: Moments, frozen: torch.Tensor, start: dict, theta2: torch.Tensor, noise_std: float,
                    half: torch.Tensor | None = None) -> Optimum:
    """`finetune_optimum` from the data's moments (shared by a sweep group's trials); the
    population value on fresh rows of covariance Σ = half² (None: Σ = I)."""
    method = method_of(spec)
    return Optimum(method.optimum(spec, moments.residual(frozen), start), method.population(spec, theta2.T - frozen, noise_std, start, half))


def frontier_of(cfg: Config, base_weight: torch.Tensor, delta: torch.Tensor, rank: int) -> dict[str, Any]:
    """The learning–forgetting frontier of the finetune (core/frontier.py) at `rank` and at full
    rank, the base (Δ = 0) and the trained update `delta` on the same axes: population target
    loss L_t and forgetting F, from D = θ2ᵀ − W and the two input covariances."""
    from lora_cli.core import frontier

    theta2 = thetas(cfg)[1]
    d = theta2.T.double() - base_weight.double()
    sigma_t, sigma_s = input_sigma(cfg, ADAPTED), input_sigma(cfg, BASE_STAGE)
    noise = cfg.data.noise_std
    ranked, full = frontier.frontier(d, sigma_t, sigma_s, rank, noise), frontier.frontier(d, sigma_t, sigma_s, None, noise)
    return {"lambdas": [lam for lam, _, _ in ranked], "rank": [[lt, f] for _, lt, f in ranked], "full": [[lt, f] for _, lt, f in full],
            "base": list(frontier.losses(d, torch.zeros_like(d), sigma_t, sigma_s, noise)),
            "trained": list(frontier.losses(d, delta, sigma_t, sigma_s, noise))}


def decay_of(cfg: Config, base_weight: torch.Tensor, result: FinetuneResult, delta: torch.Tensor) -> dict[str, Any] | None:
    """Under finetune.weight_decay: the objective coupled decay makes training minimise, on
    fresh rows (population loss + (wd/2)·‖trained tensors‖²), for the trained update `delta`
    and for the method's closed-form penalised optimum (core/penalised.py), or why there is none."""
    from lora_cli.core.frontier import losses
    from lora_cli.core.penalised import Penalised
    from lora_cli.train.optimizers import COUPLED_DECAY

    tc, spec = cfg.finetune, result.spec
    if not tc.weight_decay:
        return None
    method, noise = method_of(spec), cfg.data.noise_std
    theta2 = result.theta2 if result.theta2 is not None else thetas(cfg)[1]
    target = theta2.T.double() - base_weight.double()
    sigma = input_sigma(cfg, ADAPTED)
    trained = Penalised(losses(target, delta, sigma, sigma, noise)[0], method.decay_penalty(spec, result.adapter, tc.weight_decay))
    if sigma_half(cfg, ADAPTED) is not None:
        found = "the finetune inputs are not isotropic, and the nuclear norm of ΔW is not that of ΔW·Σ^½"
    else:
        frozen = result.frozen if result.frozen is not None else base_weight
        found = method.decayed_optimum(spec, theta2.T - frozen, frozen, result.initial, noise, tc.weight_decay)
    best = None if isinstance(found, str) else found[1]
    form = "θ2ᵀ − W's, soft-thresholded" if best is not None and best.rank is not None else "a ridge toward W' = 0"
    return {"weight_decay": tc.weight_decay, "optimizer": tc.optimizer, "coupled": tc.optimizer in COUPLED_DECAY, "trained": trained.to_dict(),
            "optimum": best.to_dict() if best else None, "form": form if best else None, "why": found if isinstance(found, str) else None}


def diagnostics(
    cfg: Config, base_weight: torch.Tensor, delta: torch.Tensor, rank: int, factors: tuple | None = None, result: FinetuneResult | None = None
) -> subspace.Diagnostics:
    """The learned ΔW (onto the stored base W) of a rank-`rank` adapter against the true shift
    (θ2 − θ)ᵀ and against what the adapter must learn, θ2ᵀ − W. `factors` (left, right) with
    ΔW = left·right give ΔW's SVD from the thin factors; `result` gives θ2 and the shift."""
    if result is not None and result.theta2 is not None:
        shift, theta2 = result.true_delta, result.theta2
    else:
        theta, theta2 = thetas(cfg)
        shift = true_delta(theta, theta2)
    full = method_of(cfg.adapter.spec()).full_rank
    return subspace.diagnose(delta, shift, theta2.T - base_weight, rank, factors=factors, base=base_weight, half=sigma_half(cfg, ADAPTED), full=full)


def schedule(tc: TrainConfig) -> Schedule:
    return Schedule(tc.epochs, tc.batch_size, tc.log_every, tc.checkpoint_every)


def pretrain(
    cfg: Config,
    runtime: Runtime = Runtime(),
    on_epoch: EpochCallback | None = None,
    resume: TrainState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    on_log: LogCallback | None = None,
) -> PretrainResult:
    """Fit nn.Linear(d_in, d_out, bias=False) to y = X·θ from its default init.

    Data and init are drawn on the CPU (so every device sees the same numbers), then moved.
    `resume` continues from a checkpoint of the same engine; `on_checkpoint` receives them.
    """
    dev = torch.device(runtime.device)
    theta = thetas(cfg)[0]
    x, y = (t.to(dev) for t in regression(cfg, theta, "pretrain"))
    w0 = init_linear_weight(cfg.data.d_in, cfg.data.d_out, generator(cfg.seed, "init_base")).to(dev)
    tc = cfg.pretrain
    task = Task((KEY_W,), w0, None, {KEY_W: w0}, x, y, tc.lr, tc.batch_size, held_out(cfg, theta, "pretrain", dev), tc.optim(x.shape[0] // tc.batch_size))
    engine = build(runtime.engine, PRETRAIN, task, runtime.world)
    batches = generator(cfg.seed, "batches_pretrain")
    fit = train(engine, schedule(cfg.pretrain), batches, on_epoch, resume, on_checkpoint, on_log)
    return PretrainResult(engine.trained()[KEY_W].cpu(), fit.history, fit.divergence, (x.cpu(), y.cpu()))


def finetune(
    cfg: Config,
    base_weight: torch.Tensor,
    runtime: Runtime = Runtime(),
    on_epoch: EpochCallback | None = None,
    resume: TrainState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    on_log: LogCallback | None = None,
) -> FinetuneResult:
    """Fit the method's params on the frozen base to the shifted data y2 = X2·θ2 (see `pretrain`)."""
    dev = torch.device(runtime.device)
    theta, theta2 = thetas(cfg)
    rows = regression(cfg, theta2, "finetune")
    x, y = (t.to(dev) for t in rows)
    spec = cfg.adapter.spec()
    method, seed = method_of(spec), adapter_seed(cfg)
    initial, frozen = adapter_start(cfg, spec, base_weight, lambda: Moments.of(*rows).residual(base_weight), lambda: rows[0])
    start = {key: t.to(dev) for key, t in initial.items()}
    test = finetune_held_out(cfg, theta, theta2, dev)
    tc = cfg.finetune
    task = Task(method.trains, frozen.to(dev), spec, start, x, y, tc.lr, tc.batch_size, test, tc.optim(x.shape[0] // tc.batch_size))
    engine = build(runtime.engine, spec.method, task, runtime.world)
    fit = train(engine, schedule(cfg.finetune), generator(seed, "batches_finetune"), on_epoch, resume, on_checkpoint, on_log)
    adapter = {key: t.cpu() for key, t in engine.trained().items()}
    shift, data = true_delta(theta, theta2), (x.cpu(), y.cpu())
    return FinetuneResult(spec, adapter, initial, shift, fit.history, fit.divergence, frozen.cpu(), theta2, data)


def train_stage(
    cfg: Config,
    stage: Stage,
    base_weight: torch.Tensor | None,
    runtime: Runtime = Runtime(),
    on_epoch: EpochCallback | None = None,
    resume: TrainState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
    on_log: LogCallback | None = None,
) -> PretrainResult | FinetuneResult:
    """Train a stage of config/stages.py: the config's method on `base_weight`, or a fresh W."""
    if stage.on_base:
        return finetune(cfg, base_weight, runtime, on_epoch, resume, on_checkpoint, on_log)
    return pretrain(cfg, runtime, on_epoch, resume, on_checkpoint, on_log)


@torch.inference_mode()
def merge(cfg: Config, base_weight: torch.Tensor, spec: AdapterSpec, adapter: dict[str, torch.Tensor]) -> MergeResult:
    """W' = W + ΔW for the params of `spec`'s method on the original base W (as stored: PiSSA's
    and OLoRA's exported onto W), checked against the unmerged forward on the shifted data."""
    theta, theta2 = thetas(cfg)
    x, y = regression(cfg, theta2, "finetune")
    evaluated = finetune_held_out(cfg, theta, theta2)
    test, source = evaluated.get("test"), evaluated.get("source")
    method = method_of(spec)
    merged = merge_params({"weight": base_weight}, spec, adapter)["weight"]
    adapter_out = method.forward(base_weight, spec, adapter, x)
    merged_out = x @ merged.T
    return MergeResult(
        merged=merged,
        delta=method.delta(base_weight, spec, adapter),
        base_loss=F.mse_loss(x @ base_weight.T, y).item(),
        adapter_loss=F.mse_loss(adapter_out, y).item(),
        merged_loss=F.mse_loss(merged_out, y).item(),
        max_abs_diff=(merged_out - adapter_out).abs().max().item(),
        test_loss=F.mse_loss(test[0] @ merged.T, test[1]).item() if test else None,
        source_loss=F.mse_loss(source[0] @ merged.T, source[1]).item() if source else None,
    )
