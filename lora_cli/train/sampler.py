"""The batches every engine sees: b distinct random rows a step, drawn in O(b)."""

from __future__ import annotations

import torch


def epoch_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    """(steps, batch_size) row indices for one epoch; each row is batch_size distinct rows of [0, n).

    Each step is an independent uniform draw without replacement, like the blog's
    sample.int(n, 128). The training loop calls this for every engine, so every engine sees
    the same batches. When batch_size is small against n, draws with replacement are taken
    in order and repeats skipped, which is exactly sampling without replacement and costs
    O(batch_size) a step; a step that runs out of draws (vanishingly rare) falls back to the
    O(n) method.
    """
    if 4 * batch_size > n:
        return _topk_batches(n, batch_size, steps, generator)
    draws = torch.randint(n, (steps, batch_size + batch_size // 2 + 16), generator=generator)
    batches, complete = first_distinct(draws, batch_size)
    if not bool(complete.all()):
        batches[~complete] = _topk_batches(n, batch_size, int((~complete).sum()), generator)
    return batches


def first_distinct(draws: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first k distinct values of each row of `draws` (steps, m), in draw order.

    Returns (steps, k) values and a (steps,) mask of rows that had k distinct values
    (the other rows hold garbage and must be replaced).
    """
    ordered, order = draws.sort(dim=1, stable=True)  # equal values keep draw order
    repeat_sorted = torch.zeros_like(draws, dtype=torch.bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]  # a later copy of a value
    first = ~torch.zeros_like(repeat_sorted).scatter_(1, order, repeat_sorted)
    rank = first.cumsum(dim=1)  # 1-based position among the distinct values
    complete = rank[:, -1] >= k
    keep = first & (rank <= k)
    keep[~complete] = False
    out = torch.zeros(draws.shape[0], k, dtype=draws.dtype)
    out[complete] = draws[keep].view(-1, k)
    return out, complete


def _topk_batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> torch.Tensor:
    # the batch_size largest of n uniform numbers pick a uniform random subset
    return torch.rand(steps, n, generator=generator).topk(batch_size, dim=1, sorted=False).indices
