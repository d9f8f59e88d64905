"""Window arithmetic and the put window, read from a real local ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from gauntlet.chain import ChainError, LocalChain
from gauntlet.clock import closed_window, first_block, global_step, put_window, window_of
from gauntlet.config import ChainConfig


def test_windows_partition_the_blocks() -> None:
    assert (window_of(0, 8), window_of(7, 8), window_of(8, 8), window_of(17, 8)) == (0, 0, 1, 2)
    assert first_block(3, 8) == 24
    for block in range(200):
        w = window_of(block, 8)
        assert first_block(w, 8) <= block < first_block(w + 1, 8)


@pytest.mark.parametrize("call", [lambda: window_of(-1, 8), lambda: first_block(-1, 8), lambda: window_of(3, 0)])
def test_bad_arguments_are_refused(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_put_window_starts_at_the_first_block_of_the_next_window(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "chain.sqlite", blocks_per_window=8, block_time_s=12.0, genesis_time=990.0)
    chain.produce_blocks(7, at=1000.0)  # blocks 1..7 at 1000, 1012, ..., 1072
    with pytest.raises(ChainError) as caught:  # window 1 has not begun: t_min is unknown
        put_window(chain, 0, 8, 10.0)
    assert caught.value.reason == "not_found"
    chain.produce_blocks(9, at=1084.0)  # blocks 8..16
    assert put_window(chain, 0, 8, 10.0) == (1084.0, 1094.0)
    assert put_window(chain, 1, 8, 10.0) == (1084.0 + 8 * 12.0, 1084.0 + 8 * 12.0 + 10.0)


def test_closed_window_lags_by_the_validator_offset() -> None:
    cfg = ChainConfig(blocks_per_window=8, validator_offset=2, start_window=0)
    assert closed_window(15, cfg) is None  # window 1: nothing is two windows old yet
    assert closed_window(16, cfg) == 0 and closed_window(23, cfg) == 0 and closed_window(24, cfg) == 1
    assert closed_window(23, ChainConfig(blocks_per_window=8, validator_offset=2, start_window=1)) is None


def test_global_step() -> None:
    assert global_step(120, 100) == 20 and global_step(100, 100) == 0
    with pytest.raises(ValueError, match="before the start window"):
        global_step(99, 100)
