"""The network folder: settings, ledger, registrations, buckets found from the chain, manifest."""

from __future__ import annotations

import argparse
import json
import math
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from gauntlet.config import load_config
from gauntlet.localnet import cli
from gauntlet.localnet.network import (
    HOSTILE_ORDER,
    default_mix,
    dump_toml,
    init_network,
    load_network,
    parse_mix,
)
from gauntlet.storage import BucketSpec, gradient_key


@pytest.fixture
def data_paths(prepared_data: tuple[Path, Path]) -> dict[str, Path]:
    corpus, tokenizer = prepared_data
    return {"corpus": corpus, "tokenizer": tokenizer}


@pytest.mark.parametrize("peers", [1, 2, 5, 8, 12, 21, 24, 40])
def test_default_mix_keeps_honest_peers_first_and_at_least_forty_percent(peers: int) -> None:
    mix = default_mix(peers)
    counts = Counter(mix)
    assert len(mix) == peers
    assert counts["honest"] >= math.ceil(0.4 * peers)
    first_hostile = next((i for i, b in enumerate(mix) if b != "honest"), peers)
    assert set(mix[:first_hostile]) == {"honest"} and "honest" not in mix[first_hostile:]
    assert all(counts[k] == 1 for k in set(mix) - {"honest", "sybil"})
    assert counts["sybil"] in (0, 2)
    kinds = [k for k in HOSTILE_ORDER if k in counts]
    assert kinds == sorted(kinds, key=HOSTILE_ORDER.index)


def test_default_mix_golden_values() -> None:
    assert default_mix(8) == ["honest"] * 4 + ["copycat", "late", "malformed", "free_rider"]
    assert Counter(default_mix(12))["honest"] == 5
    before_sybil = HOSTILE_ORDER[:HOSTILE_ORDER.index("sybil")]
    assert Counter(default_mix(21)) == Counter({"honest": 9, "sybil": 2, **{k: 1 for k in before_sybil}})
    every = [k for k in HOSTILE_ORDER if k != "sybil"]
    assert Counter(default_mix(27)) == Counter({"honest": 11, "sybil": 2, **{k: 1 for k in every}})
    with pytest.raises(ValueError, match="at least one peer"):
        default_mix(0)


def test_parse_mix() -> None:
    assert parse_mix("honest=2, copycat, sybil=2,late=0") == ["honest", "honest", "copycat", "sybil", "sybil"]
    for bad, words in [("honest=x", "integer"), ("idle=1", "unknown behaviour"), ("honest=-1", ">= 0"),
                       ("", "no peers")]:
        with pytest.raises(ValueError, match=words):
            parse_mix(bad)


def test_dump_toml_round_trips_a_config_tree() -> None:
    tree = {"preset": "default", "chain": {"ledger": '/tmp/a "b"\\c', "block_time_s": 1.5, "netuid": 3},
            "filter": {"probe_elements": [10, 11], "strict": True}}
    assert tomllib.loads(dump_toml(tree)) == tree


def test_init_creates_a_network_the_chain_describes(tmp_path: Path, data_paths) -> None:
    folder = tmp_path / "net"
    net = init_network(folder, peers=8, seed=7, overrides=["filter.put_window_s=1.5"], **data_paths)
    for sub in ("chain.sqlite", "config.toml", "manifest.json", "audit", "validator", "miners", "buckets"):
        assert (folder / sub).exists(), sub
    cfg = load_config(folder / "config.toml")
    assert cfg == net.config and cfg.model.size == "tiny" and cfg.filter.put_window_s == 1.5
    assert cfg.chain.ledger == str(folder / "chain.sqlite")
    assert cfg.audit.root == str(folder / "audit") and cfg.validator.workdir == str(folder / "validator")
    assert cfg.data.corpus == str(data_paths["corpus"]) and Path(cfg.data.tokenizer).is_absolute()

    manifest = json.loads((folder / "manifest.json").read_text())
    assert [p["behaviour"] for p in manifest["peers"]] == default_mix(8)
    assert manifest == net.manifest and manifest["seed"] == 7
    metagraph = {n.uid: n for n in net.chain.metagraph()}
    assert set(metagraph) == {net.validator.uid} | {p["uid"] for p in manifest["peers"]}
    validator = metagraph[net.validator.uid]
    assert validator.hotkey == cfg.validator.hotkey and validator.validator_permit and validator.stake > 0
    for peer in manifest["peers"]:
        node = metagraph[peer["uid"]]
        assert node.hotkey == peer["hotkey"] and not node.validator_permit
        assert peer["behaviour"] not in peer["hotkey"]

    commitments = net.chain.commitments()
    assert set(commitments) == set(metagraph)
    for uid, text in commitments.items():
        spec = BucketSpec.from_commitment(text)
        assert spec.kind == "local" and Path(spec.path) == folder / "buckets" / metagraph[uid].hotkey
    bucket = net.bucket(net.peers[0].uid)  # resolved from the chain, as the validator would
    bucket.put(gradient_key(0, net.peers[0].uid), b"hello")
    assert (folder / "buckets" / net.peers[0].hotkey / gradient_key(0, net.peers[0].uid)).read_bytes() == b"hello"

    again = load_network(folder)
    assert again.peers == net.peers and again.validator == net.validator and again.config == cfg
    assert again.seed == 7 and again.chain.block() == net.chain.block()
    assert again.uids("copycat") == [p.uid for p in net.peers if p.behaviour == "copycat"]
    assert again.behaviour_of(net.peers[-1].uid) == net.peers[-1].behaviour


def test_a_network_configured_to_start_later_starts_its_chain_there(tmp_path: Path, data_paths) -> None:
    """chain.start_window W: the chain is created at W's first block, so the first window the
    miners run is W (the benchmarks' seeds start networks at other windows this way)."""
    from gauntlet.clock import window_of

    net = init_network(tmp_path / "late", behaviours=["honest"], overrides={"chain": {"start_window": 3}},
                       **data_paths)
    bpw = net.config.chain.blocks_per_window
    assert net.chain.block() == 3 * bpw and window_of(net.chain.block(), bpw) == 3
    assert init_network(tmp_path / "now", behaviours=["honest"], **data_paths).chain.block() == 0


def test_init_refuses_to_overwrite_without_force(tmp_path: Path, data_paths) -> None:
    folder = tmp_path / "net"
    init_network(folder, behaviours=["honest", "late"], **data_paths)
    with pytest.raises(FileExistsError, match="force"):
        init_network(folder, peers=2, **data_paths)
    net = init_network(folder, behaviours=["honest", "noise", "sybil", "sybil"], force=True, **data_paths)
    assert [p.behaviour for p in load_network(folder).peers] == ["honest", "noise", "sybil", "sybil"]
    assert len(net.chain.metagraph()) == 5  # a fresh ledger, not the old one plus new peers
    other = tmp_path / "precious"
    other.mkdir()
    (other / "thesis.tex").write_text("do not delete")
    with pytest.raises(FileExistsError, match="does not look like a network"):
        init_network(other, peers=2, force=True, **data_paths)
    assert (other / "thesis.tex").exists()


def test_init_checks_its_arguments(tmp_path: Path, data_paths) -> None:
    with pytest.raises(ValueError, match="3 behaviours given for 4 peers"):
        init_network(tmp_path / "a", peers=4, behaviours=["honest"] * 3, **data_paths)
    with pytest.raises(ValueError, match="unknown behaviours"):
        init_network(tmp_path / "b", behaviours=["honest", "idle"], **data_paths)
    with pytest.raises(FileNotFoundError, match="no manifest"):
        load_network(tmp_path / "nothing")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gauntlet")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_init_and_run_a_window(tmp_path: Path, data_paths, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "net"
    sets = [f"--{k}={v}" for k, v in data_paths.items()]
    args = _parser().parse_args(["localnet", "init", "--network", str(folder), "--behaviours", "honest=2,malformed",
                                 "--set", "data.rows_per_page=4", "--set", "filter.put_window_s=1.0", *sets])
    assert args.func(args) == 0
    assert "uid   3  peer-002  malformed" in capsys.readouterr().out
    assert args.func(args) == 2  # a second init without --force
    assert "--force" in capsys.readouterr().err
    args = _parser().parse_args(["localnet", "run", "--windows", "1", "--network", str(folder)])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "window 0: 3 uploads" in out and "uid 3 (malformed)" in out
    net = load_network(folder)
    assert all(net.bucket(p.uid).stat(gradient_key(0, p.uid)) is not None for p in net.peers)
