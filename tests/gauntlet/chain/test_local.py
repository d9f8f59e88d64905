"""The local ledger: a real SQLite file shared by processes, used as the real chain would be."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from gauntlet.chain import ChainError, LocalChain, open_chain, to_u16
from gauntlet.config import ChainConfig


def _reference_hashes(netuid: int, n: int) -> list[str]:
    """The hash rule written out naively: blake2b-256 of (parent hash bytes, block number u64 LE)."""
    hashes = ["0x" + hashlib.blake2b(f"gauntlet-local/{netuid}".encode(), digest_size=32).hexdigest()]
    for number in range(1, n + 1):
        data = bytes.fromhex(hashes[-1][2:]) + number.to_bytes(8, "little")
        hashes.append("0x" + hashlib.blake2b(data, digest_size=32).hexdigest())
    return hashes


def test_block_hashes_are_deterministic_and_chained(tmp_path: Path) -> None:
    a = LocalChain(tmp_path / "a.sqlite", netuid=3)
    b = LocalChain(tmp_path / "b.sqlite", netuid=3, genesis_time=0.0)
    a.produce_blocks(10)
    b.produce_blocks(4, at=50.0)
    b.produce_blocks(6, at=500.0)
    expected = _reference_hashes(3, 10)
    assert [a.block_hash(i) for i in range(11)] == expected == [b.block_hash(i) for i in range(11)]
    other = LocalChain(tmp_path / "c.sqlite", netuid=4)
    assert other.block_hash(0) != expected[0]
    with pytest.raises(ChainError) as caught:
        a.block_hash(11)
    assert caught.value.reason == "not_found"


def test_timestamps_wall_clock_or_simulated(tmp_path: Path) -> None:
    before = time.time()
    chain = LocalChain(tmp_path / "chain.sqlite", block_time_s=12.0)
    chain.produce_blocks(3)
    stamps = [chain.block_timestamp(i) for i in range(4)]
    assert before <= stamps[0] and stamps == sorted(stamps) and stamps[-1] <= time.time()
    at = stamps[-1] + 100.0
    assert chain.produce_blocks(3, at=at) == 6
    assert [chain.block_timestamp(i) for i in (4, 5, 6)] == [at, at + 12.0, at + 24.0]
    with pytest.raises(ValueError, match="before the head"):
        chain.produce_blocks(1, at=at)


def test_realtime_mode_spaces_blocks_by_the_block_time(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "chain.sqlite", block_time_s=0.05)
    assert chain.run_realtime(until_block=4) == 4
    stamps = [chain.block_timestamp(i) for i in range(5)]
    assert all(later - earlier >= 0.05 for earlier, later in zip(stamps, stamps[1:]))
    stop = threading.Event()
    runner = threading.Thread(target=chain.run_realtime, kwargs={"stop": stop})
    runner.start()
    while chain.block() < 6:
        time.sleep(0.01)
    stop.set()
    runner.join(timeout=5)
    assert not runner.is_alive()


def test_settings_are_fixed_at_creation(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    LocalChain(path, netuid=7, blocks_per_window=4, block_time_s=2.0, weights_rate_limit=5)
    again = LocalChain(path)
    assert (again.netuid, again.blocks_per_window, again.block_time_s, again.weights_rate_limit) == (7, 4, 2.0, 5)
    with pytest.raises(ValueError, match="netuid=7, not 3"):
        LocalChain(path, netuid=3)


def test_registration_and_metagraph(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "chain.sqlite")
    assert chain.register("val", stake=1000.0, validator_permit=True) == 0
    assert [chain.register(f"miner-{i}") for i in range(3)] == [1, 2, 3]
    assert chain.register("miner-1", stake=5.0) == 2  # already registered: same uid, unchanged
    graph = chain.metagraph()
    assert [(n.uid, n.hotkey, n.stake, n.validator_permit, n.last_update) for n in graph[:2]] == [
        (0, "val", 1000.0, True, 0), (1, "miner-0", 0.0, False, 0)]
    assert [n.uid for n in graph] == [0, 1, 2, 3]


def test_commitments_round_trip(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "chain.sqlite")
    for hotkey in ("a", "b", "c"):
        chain.register(hotkey)
    chain.commit("a", "g1|local|/buckets/a")
    chain.commit("c", "first")
    chain.commit("c", "second")
    assert chain.commitments() == {0: "g1|local|/buckets/a", 2: "second"}
    with pytest.raises(ChainError) as caught:
        chain.commit("stranger", "x")
    assert caught.value.reason == "not_registered"
    with pytest.raises(ChainError) as caught:
        chain.commit("a", "x" * 385)
    assert caught.value.reason == "too_large"


def test_weights_are_stored_as_u16_and_rate_limited(tmp_path: Path) -> None:
    chain = LocalChain(tmp_path / "chain.sqlite", weights_rate_limit=10)
    for hotkey in ("val", "m1", "m2"):
        chain.register(hotkey)
    chain.produce_blocks(5)
    result = chain.set_weights("val", [1, 2], [0.75, 0.25], version_key=7)
    assert (result.success, result.block, result.uids, result.version_key) == (True, 5, (1, 2), 7)
    (record,) = chain.weights_history("val")
    assert (record.block, record.uids, record.weights_u16, record.version_key) == (5, (1, 2), (65535, 21845), 7)
    assert chain.metagraph()[0].last_update == 5
    chain.produce_blocks(9)
    with pytest.raises(ChainError, match="retry in 1 blocks") as caught:
        chain.set_weights("val", [1], [1.0], 7)
    assert caught.value.reason == "rate_limited"
    chain.produce_blocks(1)
    assert chain.set_weights("val", [1], [1.0], 7).block == 15
    assert [r.block for r in chain.weights_history()] == [5, 15]
    assert chain.weights_history(since_block=6)[0].weights_u16 == (65535,)


@pytest.mark.parametrize(
    ("hotkey", "uids", "weights", "error", "match"),
    [("nobody", [1], [1.0], ChainError, "not registered"),
     ("val", [1, 9], [1.0, 1.0], ChainError, r"uids \[9\]"),
     ("val", [1], [0.0], ValueError, "all weights are zero"),
     ("val", [1, 2], [1.0], ValueError, "differ in length"),
     ("val", [1], [float("nan")], ValueError, "finite")],
)
def test_weights_refusals(tmp_path: Path, hotkey, uids, weights, error, match) -> None:
    chain = LocalChain(tmp_path / "chain.sqlite")
    for name in ("val", "m1", "m2"):
        chain.register(name)
    with pytest.raises(error, match=match):
        chain.set_weights(hotkey, uids, weights, 0)
    assert chain.weights_history() == []


def test_to_u16_scales_the_largest_weight_to_65535() -> None:
    assert to_u16([3, 1, 2], [0.5, 0.25, 0.0]) == ([3, 1], [65535, 32768])


def _hammer(path: str, tag: str, n: int, go) -> None:
    chain = LocalChain(path)
    go.wait(30)  # a barrier: both processes start writing together
    for i in range(n):
        chain.produce_blocks(1)
        chain.register(f"{tag}-{i}")
        chain.commit(f"{tag}-{i}", f"{tag}:{i}")


def test_two_processes_share_one_ledger_safely(tmp_path: Path) -> None:
    path = str(tmp_path / "chain.sqlite")
    LocalChain(path, netuid=3)
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Barrier(2)
    workers = [ctx.Process(target=_hammer, args=(path, tag, 40, go)) for tag in ("p", "q")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    chain = LocalChain(path)
    assert chain.block() == 80
    assert [chain.block_hash(i) for i in range(81)] == _reference_hashes(3, 80)
    graph = chain.metagraph()
    assert [n.uid for n in graph] == list(range(80))
    assert sorted(n.hotkey for n in graph) == sorted(f"{t}-{i}" for t in "pq" for i in range(40))
    assert chain.commitments() == {n.uid: n.hotkey.replace("-", ":") for n in graph}


def test_open_chain_picks_the_local_ledger(tmp_path: Path) -> None:
    cfg = ChainConfig(network="local", ledger=str(tmp_path / "net" / "chain.sqlite"), netuid=5, blocks_per_window=4)
    chain = open_chain(cfg)
    assert isinstance(chain, LocalChain) and (chain.netuid, chain.blocks_per_window) == (5, 4)
    assert chain.block() == 0
