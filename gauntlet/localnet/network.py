"""A local network in one folder: the chain ledger, one bucket per peer, the data, the manifest.

Layout of a network folder (default `data/localnet/`):

    config.toml      gauntlet/presets/local.toml plus the absolute paths below; `load_config` reads it
    chain.sqlite     the LocalChain ledger: the validator and every peer registered, each
                     bucket committed as a `BucketSpec` (the validator's holds its gather list)
    buckets/<hotkey>/  one local bucket per peer and one for the validator
    audit/, validator/ the validator's audit tables and workdir (checkpoints, archive)
    miners/          the simulated miners' state (shared theta per window, momentum per uid)
    manifest.json    {"peers": [{"uid", "hotkey", "behaviour"}...], "validator": {...}, "seed",
                     "honest_work": [uids]}: ground truth for reports, benchmarks and tests
                     (`honest_work`: see HONEST_WORK); the validator never reads it

Default mix of behaviours for N peers (`default_mix`): at least 40 % of the peers (rounded up)
are honest; the rest get one hostile kind each in the order of `HOSTILE_ORDER` (a sybil group
takes two uids) while they fit, and any uids left over are honest too. Honest peers get the
lowest uids. N = 8: 4 honest, copycat, late, malformed, free_rider; N = 12: 5 honest, then
copycat, late, malformed, free_rider, sign_flip, data_ignorer, stale; N = 21: 9 honest and every
hostile kind up to the sybils (x2); N = 27: 11 honest and every kind, the four that run their own
hostile S3 endpoint too. Hotkeys (`peer-000`...) say nothing about behaviours.
"""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gauntlet.chain import LocalChain
from gauntlet.config import LOCAL_CONFIG, DataConfig, GauntletConfig, load_config, parse_overrides
from gauntlet.localnet.behaviours import BEHAVIOURS
from gauntlet.localnet.hostile_endpoints import ENDPOINT_KINDS, commit_endpoints
from gauntlet.storage import Bucket, BucketSpec, atomic_write

DEFAULT_CONFIG = LOCAL_CONFIG
DEFAULT_FOLDER = Path("data/localnet")
HOSTILE_ORDER = ("copycat", "late", "malformed", "free_rider", "sign_flip", "data_ignorer", "stale", "noise",
                 "scaled", "early", "sybil") + ENDPOINT_KINDS
"""Most instructive first: each is caught by a different check (see behaviours.py); the peers that
run their own hostile S3 endpoint last (hostile_endpoints.py)."""
GROUP_SIZE = {"sybil": 2}
HONEST_WORK = frozenset({"honest", "scaled", "lazy", "diligent"})
"""Behaviours that train on their own pages and upload their own update (at whatever effort or
scale): the benchmark's "weight to honest work" is the weight paid to these peers, plus the first
(lowest-uid) sybil of a group, which did the training its group shares."""
MIN_HONEST_SHARE = 0.4
VALIDATOR_STAKE = 1000.0
NETWORK_DEFAULTS: dict[str, Any] = {
    "storage": {"local_trusted_time_hosts": []},
    "filter": {"fetch_timeout_s": 5.0},
}
"""Under the config file and the overrides. No loopback endpoint's clock is trusted: honest peers
use local folders (whose time the validator reads itself), and an endpoint on 127.0.0.1 is a
peer's own server, as on a real network. A short fetch deadline: a slow drip costs 5 s a read."""


@dataclass(frozen=True)
class Peer:
    uid: int
    hotkey: str
    behaviour: str


@dataclass
class Network:
    """A handle on a network folder; the chain and the buckets are the real shared state."""

    folder: Path
    config: GauntletConfig
    chain: LocalChain
    peers: list[Peer]
    validator: Peer
    seed: int = 0
    """Seeds the hostile behaviours' randomness."""

    @property
    def manifest(self) -> dict[str, Any]:
        return {"peers": [asdict(p) for p in self.peers], "validator": asdict(self.validator), "seed": self.seed,
                "honest_work": self.honest_work}

    @property
    def honest_work(self) -> list[int]:
        """The uids that do honest work (see `HONEST_WORK`), for "weight to honest work"."""
        return honest_work(self.peers)

    @property
    def miners_dir(self) -> Path:
        return self.folder / "miners"

    @property
    def config_path(self) -> Path:
        return self.folder / "config.toml"

    def behaviour_of(self, uid: int) -> str:
        for peer in self.peers:
            if peer.uid == uid:
                return peer.behaviour
        raise KeyError(f"uid {uid} is not a peer of the network in {self.folder}")

    def uids(self, behaviour: str) -> list[int]:
        return [p.uid for p in self.peers if p.behaviour == behaviour]

    def bucket(self, uid: int) -> Bucket:
        """A uid's bucket as anyone finds it: from its commitment on chain."""
        commitment = self.chain.commitments().get(uid)
        if commitment is None:
            raise KeyError(f"uid {uid} has no bucket committed on chain")
        return Bucket.from_spec(BucketSpec.from_commitment(commitment))


def honest_work(peers: Sequence[Peer]) -> list[int]:
    """uids of `HONEST_WORK` behaviours plus the lowest uid of the sybils (it trained; the rest copy)."""
    sybils = sorted(p.uid for p in peers if p.behaviour == "sybil")
    return sorted([p.uid for p in peers if p.behaviour in HONEST_WORK] + sybils[:1])


def default_mix(peers: int) -> list[str]:
    """One behaviour per peer, honest first (see the module docstring for the rule)."""
    if peers < 1:
        raise ValueError(f"a network needs at least one peer, got {peers}")
    budget = peers - math.ceil(MIN_HONEST_SHARE * peers)
    hostile: list[str] = []
    for kind in HOSTILE_ORDER:
        size = GROUP_SIZE.get(kind, 1)
        if len(hostile) + size <= budget:
            hostile += [kind] * size
    return ["honest"] * (peers - len(hostile)) + hostile


def parse_mix(text: str) -> list[str]:
    """`honest=8,copycat=1,sybil=2` -> one behaviour per peer, in the order given."""
    out: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.partition("=")
        name = name.strip()
        if name not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {name!r} in {text!r}; choose from {', '.join(BEHAVIOURS)}")
        try:
            n = int(count) if sep else 1
        except ValueError:
            raise ValueError(f"count of {name!r} must be an integer, got {count!r}") from None
        if n < 0:
            raise ValueError(f"count of {name!r} must be >= 0, got {n}")
        out += [name] * n
    if not out:
        raise ValueError(f"no peers in behaviour mix {text!r}; write e.g. honest=8,copycat=1")
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: Mapping[str, Any]) -> str:
    """Top-level scalars then one [section] per table: the shape of a Gauntlet config file."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for section, table in data.items():
        if isinstance(table, Mapping):
            lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(dict(out.get(key, {})), value) if isinstance(value, Mapping) else value
    return out


def network_settings(folder: Path, config_path: Path, corpus: Path, tokenizer: Path,
                     overrides: Mapping[str, Any] | Iterable[str] = ()) -> dict[str, Any]:
    """The base config file's values plus the network's absolute paths (and any overrides)."""
    values = tomllib.loads(Path(config_path).read_text())
    extra = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
    paths = {
        "chain": {"network": "local", "ledger": str(folder / "chain.sqlite")},
        "data": {"corpus": str(corpus), "tokenizer": str(tokenizer)},
        "audit": {"root": str(folder / "audit")},
        "validator": {"workdir": str(folder / "validator")},
    }
    return _merge(_merge(_merge(NETWORK_DEFAULTS, values), extra), paths)


def _clear(folder: Path, force: bool) -> None:
    if not folder.exists() or not any(folder.iterdir()):
        return
    if not force:
        raise FileExistsError(f"{folder} already holds a network; pass force=True (--force) to replace it")
    if not ((folder / "manifest.json").exists() or (folder / "chain.sqlite").exists()):
        raise FileExistsError(f"{folder} is not empty and does not look like a network folder; not deleting it")
    shutil.rmtree(folder)


def _ensure_data(corpus: Path, tokenizer: Path) -> None:
    if any(corpus.glob("*.parquet")) and (tokenizer / "tokenizer_config.json").is_file():
        return
    from gauntlet.prepare import prepare

    prepare(None, corpus, tokenizer)


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def init_network(folder: Path = DEFAULT_FOLDER, peers: int | None = None, behaviours: Sequence[str] | None = None,
                 config_path: Path = DEFAULT_CONFIG, seed: int = 0, force: bool = False, *,
                 corpus: Path | None = None, tokenizer: Path | None = None,
                 overrides: Mapping[str, Any] | Iterable[str] = ()) -> Network:
    """Create a network folder: ledger, registrations, buckets and commitments, data, manifest.

    `behaviours` (one per peer, in uid order) wins over `peers`; both given must agree. Without
    either there are 12 peers in the default mix. `overrides` change settings of the network's
    config.toml (tests shorten the put window with them); with `chain.start_window` W > 0 the
    chain is created at W's first block, so the first window mined is W (other pages, the
    learning-rate schedule of a network that started there).
    """
    roster = list(behaviours) if behaviours is not None else default_mix(12 if peers is None else peers)
    if peers is not None and len(roster) != peers:
        raise ValueError(f"{len(roster)} behaviours given for {peers} peers")
    unknown = sorted(set(roster) - set(BEHAVIOURS))
    if unknown:
        raise ValueError(f"unknown behaviours {unknown}; choose from {', '.join(BEHAVIOURS)}")
    folder = Path(folder).resolve()
    _clear(folder, force)
    corpus = Path(corpus or DataConfig().corpus).resolve()
    tokenizer = Path(tokenizer or DataConfig().tokenizer).resolve()
    _ensure_data(corpus, tokenizer)
    for sub in ("buckets", "audit", "validator", "miners"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    settings = network_settings(folder, config_path, corpus, tokenizer, overrides)
    (folder / "config.toml").write_text(dump_toml(settings))
    cfg = load_config(folder / "config.toml")
    chain = _create_chain(cfg)
    validator = _join(chain, folder, cfg.validator.hotkey, "validator", VALIDATOR_STAKE)
    members = [_join(chain, folder, f"peer-{i:03d}", name) for i, name in enumerate(roster)]
    commit_endpoints(chain, members)  # peers that run their own S3 endpoint commit it instead
    if cfg.chain.start_window:  # the chain at the network's first window: its miners start there
        chain.produce_blocks(cfg.chain.start_window * cfg.chain.blocks_per_window)
    network = Network(folder, cfg, chain, members, validator, seed)
    _write_json(folder / "manifest.json", network.manifest)
    return network


def _create_chain(cfg: GauntletConfig) -> LocalChain:
    """Weights may be set once a window (local.toml sets them every window)."""
    c = cfg.chain
    limit = max(1, c.blocks_per_window * cfg.weights.set_interval // 2)
    return LocalChain(c.ledger, netuid=c.netuid, blocks_per_window=c.blocks_per_window,
                      block_time_s=c.block_time_s, weights_rate_limit=limit)


def _join(chain: LocalChain, folder: Path, hotkey: str, behaviour: str, stake: float = 0.0) -> Peer:
    uid = chain.register(hotkey, stake=stake, validator_permit=behaviour == "validator")
    bucket = folder / "buckets" / hotkey
    bucket.mkdir(parents=True, exist_ok=True)
    chain.commit(hotkey, BucketSpec(kind="local", path=str(bucket)).to_commitment())
    return Peer(uid, hotkey, behaviour)


def load_network(folder: Path = DEFAULT_FOLDER) -> Network:
    folder = Path(folder).resolve()
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder} holds no network (no manifest.json); run `gauntlet localnet init`")
    manifest = json.loads(manifest_path.read_text())
    cfg = load_config(folder / "config.toml")
    chain = LocalChain(cfg.chain.ledger)
    peers = [Peer(int(p["uid"]), str(p["hotkey"]), str(p["behaviour"])) for p in manifest["peers"]]
    v = manifest["validator"]
    validator = Peer(int(v["uid"]), str(v["hotkey"]), str(v["behaviour"]))
    return Network(folder, cfg, chain, peers, validator, int(manifest.get("seed", 0)))
