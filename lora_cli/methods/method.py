"""What a way of fine-tuning is: one class per method, found in methods/registry.METHODS.

A method owns its trained tensors as a named state dict (`params`, PEFT's keys where PEFT
has the format), how they start, the merged weight and ΔW they give, their count, the best
loss any update of its kind reaches (or None with the reason), and its words in tables.
Engines declare which methods they train (train/engines.py); nothing else asks what a method is.
torch is imported inside the functions: config validation reads the registry without it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lora_cli.methods.spec import AdapterSpec

if TYPE_CHECKING:
    import torch

    from lora_cli.core.moments import Residual

Params = dict[str, "torch.Tensor"]


class Method:
    """The interface, with what most methods share; a method overrides what differs."""

    name = ""
    help = ""
    label = ""  # its name in tables ("" for plain LoRA, which needs none)
    trains: tuple[str, ...] = ()  # the keys of `params` the optimiser updates; the rest stay as they start
    no_peft: str | None = None  # why it has no PEFT adapter (None: it exports as one)
    caveat: str | None = None  # a line printed under its optimum, when the optimum needs one
    full_rank = False  # it updates every weight: the full-rank frontier bounds it, whatever adapter.rank says
    rank_floor = False  # its optimum is the rank-r floor on the frozen base: trials sharing data share one SVD of it

    def terms(self, spec: AdapterSpec, d_in: int, d_out: int) -> str | None:
        """How its trainable count is made ("2 x (1001 + 1000)"), None when it trains all of W."""
        return None

    def delta_title(self, spec: AdapterSpec) -> str:
        """A figure's title for the ΔW it learned."""
        return f"learned ΔW = W' − W ({self.label})"

    def shapes(self, spec: AdapterSpec, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
        """Every tensor of `params` and its shape, for a d_out x d_in base."""
        raise NotImplementedError

    def parameter_count(self, spec: AdapterSpec, d_in: int, d_out: int) -> int:
        """Trainable numbers."""
        return sum(math.prod(shape) for key, shape in self.shapes(spec, d_in, d_out).items() if key in self.trains)

    def step_flops(self, spec: AdapterSpec, batch: int, d_in: int, d_out: int) -> float:
        """FLOPs of one optimiser step's products on `batch` rows (threads and estimates read it):
        for the LoRA family three (b, r) x (r, d) products, O(b·r·(d_in + d_out)), no ΔW."""
        return 6.0 * batch * spec.rank * (d_in + d_out)

    def peft_config(self, spec: AdapterSpec) -> dict[str, Any] | None:
        """adapter_config.json in PEFT's format for this method when it is not LoRA's (None: LoRA's)."""
        return None

    def init_problem(self, spec: AdapterSpec) -> str | None:
        """Why spec.init cannot start this method (a config error on adapter.init), or None."""
        return None

    def start(self, w: torch.Tensor, spec: AdapterSpec, g: torch.Generator, data: Any = None) -> tuple[Params, torch.Tensor]:
        """(params at step 0, the base weight to freeze), on the CPU, from the base W (d_out, d_in);
        `data`: what a data-aware init reads (methods/inits.InitData)."""
        raise NotImplementedError

    def merged(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.Tensor:
        """W' (d_out, d_in): the one weight that does what base W plus `params` do."""
        raise NotImplementedError

    def delta(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.Tensor:
        """ΔW = W' − W, shape (d_out, d_in)."""
        return self.merged(w, spec, params) - w

    def module(self, w: torch.Tensor, spec: AdapterSpec, params: Params) -> torch.nn.Module:
        """A torch module of the frozen W with `params` as parameters, which autograd trains (the
        reference engine): its forward maps x (n, d_in) to (n, d_out) and its `named_adapter()`
        gives the params by their keys. Methods trained only as all of W need none."""
        raise NotImplementedError(f"{self.name} has no adapter module")

    def forward(self, w: torch.Tensor, spec: AdapterSpec, params: Params, x: torch.Tensor) -> torch.Tensor:
        """The unmerged output for inputs x (n, d_in): what the merge is checked against."""
        return x @ self.merged(w, spec, params).T

    def optimum(self, spec: AdapterSpec, fit: Residual, start: Params) -> float:
        """The lowest MSE any update of this kind reaches on the data, from the float64 moments
        of what it must fit (core/moments.Residual: R = y − x·Wᵀ of the frozen W)."""
        raise NotImplementedError

    def factors(self, spec: AdapterSpec, params: Params) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(left, right) with ΔW = left·right when ΔW has that low-rank form (its SVD then
        comes from the thin factors: core/subspace.factored_svd); None when ΔW is dense."""
        return None

    def population(self, spec: AdapterSpec, target: torch.Tensor, noise_std: float, start: Params, sigma_half: torch.Tensor | None = None) -> float | None:
        """The same on fresh x ~ N(0, Σ), for target θ2ᵀ − W (d_out, d_in), Σ^½ = `sigma_half`
        (None: Σ = I); None where there is no closed form. A fresh row's expected loss of ΔW is
        σ² + ‖(D − ΔW)·Σ^½‖²/d_out, so each floor is the isotropic one of D·Σ^½."""
        return None

    def decay_penalty(self, spec: AdapterSpec, params: Params, weight_decay: float) -> float:
        """(wd/2)·Σ‖t‖² over the trained tensors: what weight decay coupled into the gradient adds to the loss."""
        return weight_decay / 2 * sum(float((params[key].double() ** 2).sum()) for key in self.trains)

    def decayed_optimum(self, spec: AdapterSpec, target: torch.Tensor, frozen: torch.Tensor, start: Params, noise_std: float,
                        weight_decay: float) -> tuple[torch.Tensor, Any] | str:
        """(ΔW*, core/penalised.Penalised) minimising the population loss on x ~ N(0, I) plus the
        decay's penalty, for target θ2ᵀ − W; or why that has no closed form for this method."""
        return f"{self.label or self.name} under weight decay has no closed form here"

    def allowed(self, spec: AdapterSpec) -> str:
        """What the optimum ranges over, in words: "rank-2 update of the frozen base"."""
        raise NotImplementedError

    def words(self, record: Any) -> str:
        """What was trained, for a table's heading, from a finetune record."""
        raise NotImplementedError

    def check(self, weight_shape: tuple[int, ...], spec: AdapterSpec, params: Params) -> str | None:
        """What in `params` does not fit this method on a base of `weight_shape`, worded; None when all fits."""
        d_out, d_in = weight_shape
        expected = self.shapes(spec, d_in, d_out)
        for key, shape in expected.items():
            if key not in params:
                return f"has no tensor {key}"
            if tuple(params[key].shape) != shape:
                return f"{key} has shape {tuple(params[key].shape)}, not {shape} ({self.sized(spec)} on a {d_out}x{d_in} base)"
        extra = sorted(set(params) - set(expected))
        return f"has tensors {_a(self.sized(spec))} does not: {', '.join(extra)}" if extra else None

    def sized(self, spec: AdapterSpec) -> str:
        """"rank-2 LoRA adapter": the method at its size, for messages."""
        return f"rank-{spec.rank} {self.label or 'LoRA'} adapter"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou8" else f"a {noun}"
