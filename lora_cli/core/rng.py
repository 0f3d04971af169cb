"""One random generator per purpose, seeded stably from (seed, purpose).

A stage regenerates exactly the draws it needs (finetune needs θ and X2, never X), and a
new draw never shifts an existing one. The data seed and the adapter seed are separate
arguments of the recipes, so a sweep can vary the adapter over one shared base and data.
"""

from __future__ import annotations

import hashlib

import torch

PURPOSES = (
    "theta",
    "shift",
    "x_pretrain",
    "noise_pretrain",
    "x_finetune",
    "noise_finetune",
    "init_base",
    "init_adapter",
    "batches_pretrain",
    "batches_finetune",
    "x_test_pretrain",  # the held-out rows (data.n_test): their own streams, so training never sees a change
    "noise_test_pretrain",
    "x_test_finetune",
    "noise_test_finetune",
    "x_source",  # fresh rows of the pretraining task, to measure forgetting after a finetune (source_loss)
    "noise_source",
    "covariance_source",  # a random basis for the inputs' covariance (data.covariance.align: random)
    "covariance_target",  # the finetuning inputs' own, when shift.covariance names one
)


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator for one purpose, seeded stably from (seed, purpose)."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random purpose {purpose!r}")
    digest = hashlib.sha256(f"lora/{seed}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
