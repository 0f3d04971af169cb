"""How weights start: the base layer's init, and the adapter init registry.

An adapter init sees the frozen base weight W (d_out, d_in) and returns (lora_A, lora_B, W
to freeze). Today's entries keep W; PiSSA (next issue) will return W minus its top-r part.
B starts at zero in both, so base + adapter equals the base at step 0.

torch is imported inside the functions: config validation reads the registry's names and
help without paying for torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from lora_cli.core.adapter import AdapterSpec

if TYPE_CHECKING:
    import torch

AdapterInit = Callable[["torch.Tensor", AdapterSpec, "torch.Generator"], "tuple[torch.Tensor, torch.Tensor, torch.Tensor]"]


def init_linear_weight(d_in: int, d_out: int, g: torch.Generator) -> torch.Tensor:
    """A fresh weight (d_out, d_in) drawn as nn.Linear does, but from `g`."""
    import torch

    return torch.nn.init.kaiming_uniform_(torch.empty(d_out, d_in), a=math.sqrt(5), generator=g)


def _gaussian(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    a = torch.empty(spec.rank, w.shape[1]).normal_(0.0, 1.0, generator=g)  # N(0, 1), as the blog
    return a, torch.zeros(w.shape[0], spec.rank), w


def _kaiming(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator):
    import torch

    # PEFT's default: kaiming_uniform_(a=sqrt(5)) ⇒ U(-1/sqrt(d_in), 1/sqrt(d_in))
    a = torch.nn.init.kaiming_uniform_(torch.empty(spec.rank, w.shape[1]), a=math.sqrt(5), generator=g)
    return a, torch.zeros(w.shape[0], spec.rank), w


INITS: dict[str, tuple[AdapterInit, str]] = {
    "gaussian": (_gaussian, "lora_A ~ N(0, 1) as in the blog, lora_B = 0"),
    "kaiming": (_kaiming, "lora_A ~ kaiming uniform as PEFT's default, lora_B = 0"),
}


def init_adapter(w: torch.Tensor, spec: AdapterSpec, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lora_A (r, d_in), lora_B (d_out, r), the base weight to freeze), all on the CPU.

    Raises:
        ValueError: for an init not in INITS.
    """
    if spec.init not in INITS:
        raise ValueError(f"unknown adapter init {spec.init!r}; known: {', '.join(INITS)}")
    return INITS[spec.init][0](w, spec, g)
