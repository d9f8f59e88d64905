"""The simulated miners: timing against the chain's put window, state across processes, and the
shared model, which must be bit-for-bit what the validator computes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gauntlet.aggregation import tolerated
from gauntlet.audit.store import AuditStore
from gauntlet.clock import first_block, put_window
from gauntlet.localnet.behaviours import Malformed
from gauntlet.localnet.network import Network, init_network
from gauntlet.localnet.simulate import Miners, open_miners, read_gather, run_miners, run_network
from gauntlet.ratings import ValidatorState
from gauntlet.storage import gradient_key
from gauntlet.window.context import checkpoint_path
from gauntlet.window.pipeline import Direct, validate_window
from gauntlet.window.publish import GATHER_KEY

FAST = {"data": {"rows_per_page": 4}, "filter": {"put_window_s": 1.0}}
MALFORMED_REASON = {"garbage": "malformed", "nan": "non_finite", "wrong_window": "malformed", "pickle": "malformed",
                    "index_out_of_range": "malformed"}


def _network(tmp_path: Path, prepared_data, behaviours=None, peers=None, overrides=FAST) -> Network:
    corpus, tokenizer = prepared_data
    return init_network(tmp_path / "net", peers=peers, behaviours=behaviours, corpus=corpus, tokenizer=tokenizer,
                        overrides=overrides)


def _bucket_time(net: Network, uid: int, window: int) -> float:
    return net.bucket(uid).stat(gradient_key(window, uid)).last_modified.timestamp()


@pytest.mark.slow
def test_one_window_with_every_behaviour(tmp_path: Path, prepared_data) -> None:
    roster = ["honest"] * 3 + ["free_rider", "noise", "copycat", "copycat_noisy", "sign_flip", "scaled",
                               "data_ignorer", "stale", "late", "early", "malformed", "sybil", "sybil"]
    net = _network(tmp_path, prepared_data, roster)
    miners = Miners(net)
    before = {n: t.clone() for n, t in miners.theta.items()}
    report = run_miners(net, 0, miners)
    cfg = net.config
    assert net.chain.block() == first_block(1, cfg.chain.blocks_per_window)
    t_min, t_max = put_window(net.chain, 0, cfg.chain.blocks_per_window, cfg.filter.put_window_s)
    assert (report.t_min, report.t_max) == (t_min, t_max)
    by_name = {p.behaviour: p.uid for p in net.peers}  # the last uid of each behaviour
    assert _bucket_time(net, by_name["early"], 0) < t_min
    assert _bucket_time(net, by_name["late"], 0) > t_max
    for uid in net.uids("honest") + [by_name["copycat"]]:
        assert t_min <= _bucket_time(net, uid, 0) <= t_max

    expected = {p.uid: "ok" for p in net.peers}
    expected.update({by_name["copycat"]: "copied", by_name["copycat_noisy"]: "copied", by_name["sybil"]: "copied",
                     by_name["late"]: "too_late", by_name["early"]: "too_early"})
    expected[by_name["malformed"]] = MALFORMED_REASON[Malformed(by_name["malformed"], {}).kind(0)]
    assert report.verdicts == expected
    assert report.gather is None and report.stepped
    ok = sorted(u for u, r in expected.items() if r == "ok")  # before any gather list: Multi-Krum of these
    assert cfg.aggregation.startup == "multi_krum"
    assert set(report.aggregated) <= set(ok)
    assert len(report.aggregated) == len(ok) - tolerated(len(ok), cfg.aggregation.startup_hostile)
    assert by_name["sign_flip"] not in report.aggregated and by_name["noise"] not in report.aggregated
    eps = torch.finfo(torch.float32).eps
    for name, p in miners.theta.items():  # a sign step: every element moved by lr (to float32 rounding) or not
        moved = (p - before[name]).abs()
        rounding = 2 * eps * torch.maximum(p.abs(), before[name].abs())
        assert torch.all((moved == 0) | ((moved - report.lr).abs() <= rounding)), name


@pytest.mark.slow
def test_miners_model_is_bit_identical_to_the_validators(tmp_path: Path, prepared_data) -> None:
    """12 peers in the default mix, 3 windows, the direct validator after each; the gather list
    the validator publishes takes effect in window 2 (effective_after = 0)."""
    net = _network(tmp_path, prepared_data, peers=12, overrides={**FAST, "aggregation": {"effective_after": 0}})
    cfg = net.config
    store = AuditStore(cfg.audit.root)
    state = [ValidatorState()]

    def validate(window: int) -> None:
        state[0] = validate_window(Direct(), cfg, window, state=state[0]).state

    reports = run_network(net, 3, validate)
    assert [r.window for r in reports] == [0, 1, 2] and store.windows() == [0, 1]
    net.chain.produce_blocks(first_block(4, cfg.chain.blocks_per_window) - net.chain.block())
    validate(2)
    miners = open_miners(net)
    for window in (1, 2, 3):
        ours, theirs = load_file(miners.theta_path(window)), load_file(checkpoint_path(cfg.validator.workdir, window))
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[n], theirs[n]) for n in ours), f"theta of window {window} differs"
    assert reports[2].gather is not None and reports[2].gather == list(state[0].gather_for(2))
    verdicts = store.read("verdicts", window_id=0)
    assert {int(u): r for u, r in zip(verdicts["uid"], verdicts["reason"])} == reports[0].verdicts
    assert reports[0].verdicts[net.uids("copycat")[0]] == "copied"


def test_a_new_process_carries_on_and_windows_run_in_order(tmp_path: Path, prepared_data) -> None:
    net = _network(tmp_path, prepared_data, ["honest", "stale"])
    first = Miners(net)
    report = run_miners(net, 0, first)
    assert report.verdicts == {1: "ok", 2: "ok"} and report.aggregated == [1, 2]
    second = Miners(net)  # what a new process loads from miners/
    assert (second.first_window, second.next_window) == (0, 1)
    assert all(torch.equal(second.theta[n], t) for n, t in first.theta.items())
    for uid in (1, 2):
        a, b = first.behaviours[uid], second.behaviours[uid]
        assert b.state.windows_trained == a.state.windows_trained == 1
        assert all(torch.equal(b.state.momentum[n], m) for n, m in a.state.momentum.items())
    assert all(torch.equal(second.behaviours[2].params[n], t) for n, t in first.behaviours[2].params.items())
    with pytest.raises(ValueError, match="window 0 is over"):
        run_miners(net, 0, second)
    run_miners(net, 1, second)
    assert open_miners(net) is not first  # the cache notices that another process moved on
    with pytest.raises(ValueError, match="already mined"):
        second.catch_up(1)


def test_run_network_hands_windows_to_the_validator_once_ready(tmp_path: Path, prepared_data) -> None:
    net = _network(tmp_path, prepared_data, ["honest"])
    bpw, offset = net.config.chain.blocks_per_window, net.config.chain.validator_offset
    calls = []

    def record(window: int) -> None:
        assert net.chain.block() >= first_block(window + offset, bpw)
        calls.append(window)

    reports = run_network(net, 3, record)
    assert [r.window for r in reports] == [0, 1, 2] and calls == [0, 1]
    calls.clear()
    run_network(net, 1, record, validate_from=2)
    assert calls == [2]


def test_windows_the_miners_missed_are_aggregated_from_the_buckets(tmp_path: Path, prepared_data) -> None:
    net = _network(tmp_path, prepared_data, ["honest", "honest"])
    bpw = net.config.chain.blocks_per_window
    run_miners(net, 0)
    net.chain.produce_blocks(first_block(2, bpw) + 3 - net.chain.block())  # window 1 passes with no miner
    [report] = run_network(net, 1)
    assert report.window == 2
    miners = open_miners(net)
    one, two = load_file(miners.theta_path(1)), load_file(miners.theta_path(2))
    assert all(torch.equal(one[n], two[n]) for n in one)  # nobody uploaded in window 1: no step


def test_read_gather_follows_the_published_schedule(tmp_path: Path, prepared_data) -> None:
    net = _network(tmp_path, prepared_data, ["honest", "honest"])
    assert read_gather(net, 3) is None
    bucket = net.bucket(net.validator.uid)
    bucket.put(GATHER_KEY, json.dumps({"schedule": [[2, [1]], [5, [1, 2]]], "window": 1}).encode())
    assert [read_gather(net, w) for w in (1, 2, 4, 5, 9)] == [None, [1], [1], [1, 2], [1, 2]]
    bucket.put(GATHER_KEY, json.dumps({"schedule": [[2]]}).encode())
    with pytest.raises(ValueError, match="not a gather schedule"):
        read_gather(net, 3)
