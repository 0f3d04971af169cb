"""The config schemas, as pydantic models: types, ranges, choices and the rules that span keys.

Every section is strict (4.0 is not a rank, "1" is not a number), refuses unknown keys and is
frozen. Choices come from the core's registries, so a new init or shift kind is one entry
there. `lora schema` prints these models as JSON Schema for editors; `loading.py` is the way in.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from lora_cli.config.stages import TRAINED
from lora_cli.methods.inits import INITS
from lora_cli.methods.registry import METHODS
from lora_cli.methods.spec import SCALING_RULES, AdapterSpec
from lora_cli.core.covariances import ALIGNS, COVARIANCES, CovarianceSpec
from lora_cli.core.shifts import ALIGNS as SHIFT_ALIGNS
from lora_cli.core.shifts import SHIFTS
from lora_cli.train.optimizers import OPTIMIZERS, SCHEDULES, Optim

LIMIT = 10**15  # no size or count beyond this is meant; it keeps products of sizes far from overflow
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
RELATIONS = "relations"  # the error type of a broken rule that spans keys
ALPHA_RANGE = (1e-12, 1e12)
# why a key's range stops where it does, said with a value outside it
WHY = {"adapter.alpha": "the scaling alpha / rank enters float32 training arithmetic, which under- or overflows beyond that"}
Relation = tuple[str, str, tuple[str, ...]]  # (key, problem, the other keys the rule reads)


def whole(default: int, help: str, minimum: int = 1) -> Any:
    return Field(default, ge=minimum, le=LIMIT, description=help)


def positive(default: float, help: str) -> Any:
    return Field(default, gt=0.0, le=LIMIT, description=help)


def choice(registry: dict[str, Any]) -> Any:
    """The Literal type of a registry's names."""
    return Literal[tuple(registry)]


def choices_help(lead: str, registry: dict[str, Any]) -> str:
    """`lead: name = help; …` from a registry (every entry has a .help)."""
    return f"{lead}: " + "; ".join(f"{name} = {entry.help}" for name, entry in registry.items())


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


class CovarianceConfig(Section):
    """The pretraining inputs' covariance Σ (core/covariances.py): x ~ N(0, Σ), tr Σ = d_in."""

    kind: choice(COVARIANCES) = Field("isotropic", description=choices_help("the spectrum of the inputs' covariance", COVARIANCES))
    decay: float = Field(1.0, ge=0.0, le=100.0, description="power_law: eigenvalue i ∝ i^-decay (0: all equal, Σ = I)")
    spikes: int = whole(1, "spiked: how many strong directions (≤ d_in)")
    strength: float = Field(10.0, gt=0.0, le=1e6, description="spiked: the strong directions' eigenvalue, against 1 for the others")
    align: Literal[tuple(ALIGNS)] = Field("random", description="the directions: " + "; ".join(f"{k} = {v}" for k, v in ALIGNS.items()))

    def spec(self) -> CovarianceSpec:
        return CovarianceSpec(self.kind, self.decay, self.spikes, self.strength, self.align)


class TargetCovarianceConfig(CovarianceConfig):
    """The finetuning inputs' covariance: the pretraining one (`same`), or one of its own."""

    kind: Literal[("same", *COVARIANCES)] = Field("same", description="the finetuning inputs' spectrum: same = as data.covariance; or one of "
                                                  + ", ".join(COVARIANCES) + " with the keys below")


class DataConfig(Section):
    n: int = whole(10000, "rows of X (and of X2 for the finetune data)")
    d_in: int = whole(1001, "input features: columns of X, rows of θ")
    d_out: int = whole(1000, "outputs: columns of θ and of y")
    noise_std: float = Field(0.0, ge=0.0, le=LIMIT, description="std of Gaussian noise added to y")
    n_test: int = whole(1000, "fresh rows per stage for the held-out test loss (0 = none); drawn on their own, so training is the same either way", 0)
    covariance: CovarianceConfig = Field(default_factory=CovarianceConfig)


class ShiftConfig(Section):
    kind: choice(SHIFTS) = Field("add", description=choices_help("how θ changes between pretraining and finetuning", SHIFTS))
    value: float = Field(1.0, ge=-LIMIT, le=LIMIT, description="the size of the change, as each kind says")
    rank: int = whole(1, "lowrank: how many rank-1 terms (≤ min(d_in, d_out))")
    decay: float = Field(0.5, gt=0.0, le=1.0, description="lowrank: each term's singular value is decay times the one before")
    align: Literal[tuple(SHIFT_ALIGNS)] = Field("random", description="lowrank: its directions: " + "; ".join(f"{k} = {v}" for k, v in SHIFT_ALIGNS.items()))
    covariance: TargetCovarianceConfig = Field(default_factory=TargetCovarianceConfig)


class AdapterConfig(Section):
    """The adapter: what `methods.spec.AdapterSpec` is built from, and what adapter_config.json records."""

    method: choice(METHODS) = Field("lora", description=choices_help("the way of fine-tuning", METHODS))

    rank: int = whole(1, "LoRA rank r: lora_A is r x d_in, lora_B is d_out x r; r ≤ min(d_in, d_out)")
    alpha: float = Field(1.0, ge=ALPHA_RANGE[0], le=ALPHA_RANGE[1], description="LoRA alpha; scaling = alpha / rank under the standard rule")
    init: choice(INITS) = Field("normal", description=choices_help("how lora_A and lora_B start", INITS))
    scaling: choice(SCALING_RULES) = Field("standard", description=choices_help("the scaling rule", SCALING_RULES))
    lr_ratio: float = positive(1.0, "LoRA+: lora_B's (and DoRA's m's) learning rate is finetune.lr times this (1 = plain LoRA)")
    gamma: float = Field(16.0, gt=0.0, le=1e12, description="the gradient inits (lora_one, lora_ga, lora_ga_paper): the stable scale γ; their factors shrink by √γ")

    def spec(self) -> AdapterSpec:
        """The AdapterSpec this section describes: the one way from config to spec."""
        return AdapterSpec(rank=self.rank, alpha=self.alpha, init=self.init, scaling_rule=self.scaling, lr_ratio=self.lr_ratio, method=self.method,
                           gamma=self.gamma)


class TrainConfig(Section):
    epochs: int = whole(100, "passes; each has n // batch_size steps")
    batch_size: int = whole(128, "distinct random rows per step")
    lr: float = positive(1e-3, "learning rate (the peak, under a schedule)")
    optimizer: choice(OPTIMIZERS) = Field("adam", description=choices_help("the update rule", OPTIMIZERS))
    weight_decay: float = Field(0.0, ge=0.0, le=1e6, description="weight decay (0 = none); coupled or decoupled as the optimizer says")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd: momentum (0 = plain SGD)")
    schedule: choice(SCHEDULES) = Field("constant", description=choices_help("the learning rate over training", SCHEDULES))
    warmup_epochs: int = whole(0, "warmup and cosine: epochs of linear warm-up (the learning rate changes every step)", 0)
    log_every: int = whole(10, "full-data MSE every this many epochs (and at the end)")
    checkpoint_every: int = whole(10, "save a resumable checkpoint every this many epochs (0 = never)", minimum=0)
    optimum: bool = Field(True, description="also compute, in float64, the best loss any allowed update reaches on this data")

    def optim(self, steps_per_epoch: int) -> Optim:
        """The engines' Optim (train/optimizers.py): this section's rule, with its schedule counted in steps."""
        return Optim(self.optimizer, self.weight_decay, self.momentum, self.schedule, self.warmup_epochs * steps_per_epoch, self.epochs * steps_per_epoch)


class FinetuneConfig(TrainConfig):
    epochs: int = whole(100, "passes; each has n // batch_size steps (0: none, the adapter's start measured as it is)", 0)
    n: int | None = Field(None, ge=1, le=LIMIT, description="rows of the finetune data X2 (null: data.n)")
    seed: int | None = Field(
        None, ge=0, le=LIMIT, description="seeds the adapter init and the batches (null: the top-level seed)"
    )
    subspace: bool = Field(True, description="after training and merging, compare ΔW's singular subspaces with the true shift's (float64)")
    frontier: bool = Field(False, description="also compute the exact learning–forgetting frontier (population target loss against forgetting, rank r and full rank, float64; one SVD per point) and place ΔW on it")


class Config(Section):
    """A pipeline run (`lora run`, `pretrain`, `finetune`, `merge`); the defaults are the Posit blog's recipe."""

    name: str = Field("posit", pattern=NAME_PATTERN, description="run-folder prefix: runs/<name>-<UTC time>")
    seed: int = whole(0, "seeds the data, the base and its batches (and the adapter unless finetune.seed is set)", 0)
    data: DataConfig = Field(default_factory=DataConfig)
    shift: ShiftConfig = Field(default_factory=ShiftConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    pretrain: TrainConfig = Field(default_factory=TrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)

    @model_validator(mode="after")
    def _relations(self, info: ValidationInfo) -> Config:
        d = self.data
        problems = [("adapter.rank", rank_problem(self.adapter.rank, d.d_in, d.d_out), ("data.d_in", "data.d_out"))]
        spans = INITS[self.adapter.init].spans
        if spans > 1 and spans * self.adapter.rank > min(d.d_in, d.d_out):
            problem = f"is out of range: the {self.adapter.init} init reads {spans}·rank singular vectors, so rank ≤ {min(d.d_in, d.d_out) // spans}"
            problems.append(("adapter.rank", problem, ("adapter.init", "data.d_in", "data.d_out")))
        if self.adapter.init == "orthogonal" and self.adapter.rank % 2:
            problems.append(("adapter.rank", "is not allowed: the orthogonal init needs an even rank", ("adapter.init",)))
        init_problem = METHODS[self.adapter.method].init_problem(self.adapter.spec())
        if init_problem:
            problems.append(("adapter.init", init_problem, ("adapter.method",)))
        if self.shift.kind == "lowrank" and self.shift.rank > min(d.d_in, d.d_out):
            problem = f"is out of range: must be ≤ min(d_in, d_out) = {min(d.d_in, d.d_out)}"
            problems.append(("shift.rank", problem, ("data.d_in", "data.d_out", "shift.kind")))
        for key, cov in (("data.covariance", d.covariance), ("shift.covariance", self.shift.covariance)):
            if cov.kind == "spiked" and cov.spikes > d.d_in:
                problems.append((f"{key}.spikes", f"is out of range: must be ≤ data.d_in = {d.d_in}", ("data.d_in", f"{key}.kind")))
        for stage in TRAINED:
            tc, rows = getattr(self, stage), self.rows(stage)
            if tc.batch_size > rows:
                where = "data.n" if getattr(tc, "n", None) is None else f"{stage}.n"
                problem = f"is out of range: must be ≤ {where} = {rows} (each step draws distinct rows)"
                problems.append((f"{stage}.batch_size", problem, (where,)))
            if tc.warmup_epochs > tc.epochs:
                problems.append((f"{stage}.warmup_epochs", f"is out of range: must be ≤ {stage}.epochs = {tc.epochs}", (f"{stage}.epochs",)))
            if tc.schedule == "warmup" and tc.warmup_epochs == 0:
                problems.append((f"{stage}.warmup_epochs", "must be ≥ 1 with the warmup schedule", (f"{stage}.schedule",)))
        return check_relations(self, info, problems)

    def rows(self, stage: str) -> int:
        """Rows of the stage's training data: data.n, or finetune.n for the finetune's when set."""
        own = getattr(getattr(self, stage), "n", None)
        return self.data.n if own is None else own


class ApproxConfig(Section):
    """`lora approx`: fit A (d_in x r) · B (r x d_out) to a random target W by Adam on MSE."""

    name: str = Field("approx", pattern=NAME_PATTERN, description="run-folder prefix: runs/<name>-<UTC time>")
    seed: int = whole(42, "torch.manual_seed(seed), then W, then A, from one stream", 0)
    d_in: int = whole(8, "d: rows of W and of A")
    d_out: int = whole(8, "k: columns of W and of B")
    rank: int = whole(2, "r: A is d x r, B is r x k; r ≤ min(d, k)")
    iterations: int = whole(1000, "Adam steps on MSE(A·B, W)")
    lr: float = positive(0.01, "Adam learning rate")
    log_every: int = whole(100, "log the loss every this many iterations")

    @model_validator(mode="after")
    def _relations(self, info: ValidationInfo) -> ApproxConfig:
        return check_relations(self, info, [("rank", rank_problem(self.rank, self.d_in, self.d_out), ("d_in", "d_out"))])


SCHEMAS: dict[str, type[Section]] = {"pipeline": Config, "approx": ApproxConfig}
# keys renamed since run folders were first written: old name -> new name (read, never written)
RENAMED = {"finetune.rank": "adapter.rank", "finetune.alpha": "adapter.alpha", "finetune.init": "adapter.init", "adapter.dora": "adapter.method"}
# values whose meaning moved with a rename: under finetune.init, "gaussian" was the blog's N(0, 1);
# adapter.dora (a bool) became the method
RENAMED_VALUES = {("finetune.init", "gaussian"): "normal", ("adapter.dora", True): "dora", ("adapter.dora", False): "lora"}


def renamed_value(old: str, value: Any) -> Any:
    """What `value` under the old key `old` means under its new name."""
    return RENAMED_VALUES.get((old, value), value) if isinstance(value, (str, bool)) else value


def rank_problem(rank: int, d_in: int, d_out: int) -> str:
    limit = min(d_in, d_out)
    return "" if 1 <= rank <= limit else f"is out of range: must be 1 ≤ rank ≤ min(d_in, d_out) = {limit}"


def check_relations(model: Section, info: ValidationInfo, problems: list[Relation]) -> Any:
    """Raise every broken rule at once (as one error carrying them all), unless the caller
    checks keys on their own (context {"relations": False}: the other keys are not known yet)."""
    broken = [(key, _get(model, key), problem, related) for key, problem, related in problems if problem]
    if broken and (info.context or {}).get("relations", True):
        raise PydanticCustomError(RELATIONS, "{count} rules that span keys are broken", {"count": len(broken), "broken": broken})
    return model


def _get(model: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        model = getattr(model, part)
    return model
