"""The pieces of lora_cli.runtime.distributed that need no second process: batch shares, the group
assignment, how a lost peer is worded, and the up-front refusal of one-process engines."""

import pytest

from lora_cli.runtime import distributed
from lora_cli.runtime.distributed import World
from lora_cli.errors import ConfigError, RunError
from lora_cli.train.engines import require_parallel


@pytest.mark.parametrize("batch, size", [(33, 2), (32, 2), (7, 3), (2, 4), (1, 1)])
def test_shares_cover_the_batch_once_and_differ_by_at_most_a_row(batch, size):
    shares = [World(rank, size).rows(batch) for rank in range(size)]
    rows = [row for share in shares for row in range(batch)[share]]
    assert rows == list(range(batch))  # contiguous, in order, every row once
    lengths = [share.stop - share.start for share in shares]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_shares_of_33_rows_are_17_then_16():
    assert [World(r, 2).rows(33) for r in range(2)] == [slice(0, 17), slice(17, 33)]


def test_shard_puts_the_longest_first_on_the_least_loaded_rank():
    # by hand: 5→r0; 4→r1; 3→r1 (4 < 5); 3→r0 (5 < 7); 3→r1 (7 < 8): loads 8 and 10
    assert distributed.shard([5, 4, 3, 3, 3], 2) == [0, 1, 1, 0, 1]
    assert distributed.shard([1, 1, 1], 1) == [0, 0, 0]
    assert distributed.shard([2, 2], 4) == [0, 1]  # ties go to the lower rank


@pytest.mark.parametrize("raised, said", [
    ("Connection closed by peer [127.0.0.1]:37769", "lost touch with the other processes (one of them stopped); rank 0's own error"),
    ("Timed out waiting 30000ms for recv operation to complete", "waited 7 s ($LORA_DIST_TIMEOUT) for the other processes"),
])
def test_a_failed_collective_is_worded_as_a_lost_peer_not_a_bug(monkeypatch, raised, said):
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "7")
    with pytest.raises(RunError, match="this process stops too") as caught:
        with distributed._collective(World(1, 2)):
            raise RuntimeError(raised)
    assert str(caught.value).startswith(said)


def test_one_process_engines_are_refused_up_front_under_torchrun():
    two = World(0, 2)
    dora = "dora"
    with pytest.raises(ConfigError, match="the reference engine .*no hand-written DoRA gradients.*without torchrun"):
        require_parallel("auto", dora, two)
    with pytest.raises(ConfigError, match="--engine reference: trains in one process"):
        require_parallel("reference", None, two)
    require_parallel("auto", "lora", two)  # the fast engine shares its steps
    require_parallel("auto", dora, World())  # one process: anything goes
    require_parallel("reference", None, None)


def test_a_follower_that_cannot_see_rank_0s_folder_says_to_share_the_disk(tmp_path):
    from lora_cli.stages.kinds import open_for_follower

    with pytest.raises(RunError, match="rank 0's run folder is not visible from this process .*a filesystem every machine sees"):
        open_for_follower(tmp_path / "on-another-machine")
