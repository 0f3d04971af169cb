from pathlib import Path

import pytest

from lora_cli.store import locking
from lora_cli.config.loading import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SMOKE = CONFIGS / "smoke.yaml"


def linear_holder(weight):
    """A module whose only layer is an nn.Linear named `linear` holding `weight`, as PEFT's
    target_modules=["linear"] expects (the layout lora's adapters are saved for)."""
    import torch

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
            self.linear.weight.data.copy_(weight)

        def forward(self, x):
            return self.linear(x)

    return Holder()


def tiny_config(**sets) -> Config:
    """The smoke config with dotted overrides, e.g. tiny_config(**{"adapter.rank": 2})."""
    return load_config(SMOKE, [("test", k, v) for k, v in sets.items()])


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    """An empty runs root that the CLI uses by default, inside a throwaway working directory."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    monkeypatch.setenv("LORA_RUNS_DIR", str(root))
    return root


@pytest.fixture(autouse=True)
def _release_run_locks():
    """Library-level tests open run folders outside the CLI, which releases locks as each command ends."""
    yield
    locking.release_all()
