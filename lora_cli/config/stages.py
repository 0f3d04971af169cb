"""The pipeline's stages, declared once: their order and what each one does with a config.

Every other module reads a stage's properties here (what it trains, from which weight, on
which config section) instead of branching on its name. Pretraining is
the `full` method from a fresh W on the first split; finetuning is the config's method on the
frozen pretrained base over the shifted split; the merge trains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from lora_cli.methods.full import Full
from lora_cli.methods.spec import AdapterSpec


@dataclass(frozen=True)
class Stage:
    name: str
    trains: bool  # an epoch loop, on the config section of the same name
    on_base: bool = False  # trains on the frozen pretrained base (the shifted split); else a fresh W

    def spec(self, cfg: Any) -> AdapterSpec | None:
        """What the stage trains (None: nothing): the config's adapter on the base, every
        weight of a fresh W otherwise (adapter.rank then only sizes the diagnostics)."""
        if not self.trains:
            return None
        spec = cfg.adapter.spec()
        return spec if self.on_base else replace(spec, method=Full.name)

    def section(self, cfg: Any) -> Any:
        """The stage's training settings (epochs, lr, batch size, ...)."""
        return getattr(cfg, self.name)


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("pretrain", trains=True),
        Stage("finetune", trains=True, on_base=True),
        Stage("merge", trains=False),
    )
}
PIPELINE = tuple(STAGES)  # in order
TRAINED = tuple(name for name, stage in STAGES.items() if stage.trains)
BASE_STAGE = next(name for name, stage in STAGES.items() if stage.trains and not stage.on_base)  # makes the base the others build on
ADAPTED = next(name for name, stage in STAGES.items() if stage.on_base)  # trains on the base: a sweep trial's own stage
