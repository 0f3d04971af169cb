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


def pytest_collection_modifyitems(items):
    """A test that starts processes is slow too: `-m "not slow"` leaves both out."""
    for item in items:
        if item.get_closest_marker("process"):
            item.add_marker(pytest.mark.slow)


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


def factors(a, b, m=None) -> dict:
    """lora_A, lora_B (and DoRA's m) under PEFT's keys, as methods take them."""
    from lora_cli.methods.spec import KEY_A, KEY_B, KEY_M

    return {KEY_A: a, KEY_B: b} | ({KEY_M: m} if m is not None else {})


def engine_for(engine: str, w, spec, start: dict, x, y, lr: float, batch_size: int):
    """Engine `engine`'s trainer for spec's method from `start` on the frozen w (a pretrain when spec is None)."""
    from lora_cli.methods.registry import METHODS
    from lora_cli.train.engines import Task, build

    method = METHODS[spec.method if spec is not None else "full"]
    return build(engine, method.name, Task(method.trains, w, spec, start, x, y, lr, batch_size))


def lbfgs_minimum(objective, params, rounds: int, max_iter: int = 500) -> float:
    """min of `objective()` over `params` by torch.optim.LBFGS (strong Wolfe line search, tight
    tolerances), `rounds` steps of up to `max_iter` iterations: the tests' iterative solver."""
    import torch

    opt = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, tolerance_grad=1e-15, tolerance_change=1e-18, history_size=50,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = objective()
        value.backward()
        return value

    for _ in range(rounds):
        opt.step(closure)
    return objective().item()
