"""Joining a running network: start at window W from another validator's published checkpoint.

A validator publishes, every `validator.publish_checkpoint_every` windows, theta_{W+1} and the
state window W + 1 starts from, next to the record of what it aggregated in W (whose
`checkpoint_after` is the checkpoint's sha256; stage "publish"). A new validator (or a miner)
picks a validator it trusts by hotkey, reads those three objects from that validator's committed
bucket with the same bounded, policy-checked read as any peer's file, checks the checkpoint's
hash against the published record, and leaves the checkpoint and the state in its own workdir;
its first window then starts exactly where the other validator's did.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gauntlet.chain import open_chain
from gauntlet.config import GauntletConfig
from gauntlet.peer_read import read_peer_object
from gauntlet.state import joined_path, state_from_snapshot
from gauntlet.storage import Bucket, BucketSpec, StorageError, atomic_write
from gauntlet.window.context import checkpoint_path, context_for
from gauntlet.window.fetch import endpoint_policy
from gauntlet.window.publish import aggregated_key, checkpoint_key, state_key

MAX_RECORD_BYTES = 64 * 2**20
"""Cap on a published JSON record (the state of thousands of peers is a few MB)."""


class JoinError(RuntimeError):
    """The source validator's publication is missing, unreadable or does not match its hash."""


@dataclass(frozen=True)
class Joined:
    window: int
    source: str
    checkpoint: Path
    checkpoint_hash: str
    peers: int


def _reader(cfg: GauntletConfig, spec: BucketSpec):
    """Bytes of one object of the source's bucket, bounded like any peer's file."""
    if spec.kind == "local":
        bucket = Bucket.from_spec(spec, allow_local=cfg.chain.network == "local")
        return lambda key, cap: bucket.read(key, max_bytes=cap, timeout_s=cfg.filter.fetch_timeout_s)[1]
    policy = endpoint_policy(cfg)
    return lambda key, cap: read_peer_object(spec, key, policy, cap, cfg.filter.fetch_timeout_s).data


def _source_spec(cfg: GauntletConfig, hotkey: str) -> BucketSpec:
    chain = open_chain(cfg.chain)
    uids = [n.uid for n in chain.metagraph() if n.hotkey == hotkey]
    if not uids:
        raise JoinError(f"no registered validator has hotkey {hotkey}")
    commitment = chain.commitments().get(uids[0])
    if commitment is None:
        raise JoinError(f"validator {hotkey} has committed no bucket; it publishes nothing to join from")
    return BucketSpec.from_commitment(commitment)


def checkpoint_cap(cfg: GauntletConfig) -> int:
    """The most bytes a checkpoint of this model can take: its weights plus a generous header."""
    model = context_for(cfg).model
    return sum(p.numel() * p.element_size() for p in model.parameters()) + 2**20


def join(cfg: GauntletConfig, window: int, source_hotkey: str) -> Joined:
    """Fetch theta_W and the state W starts from, published by `source_hotkey`; check and keep them."""
    if window < 1:
        raise JoinError("window 0 starts from the deterministic initial weights: nothing to join")
    read = _reader(cfg, _source_spec(cfg, source_hotkey))
    try:
        record = json.loads(read(aggregated_key(window - 1), MAX_RECORD_BYTES))
        data = read(checkpoint_key(window), checkpoint_cap(cfg))
        raw_state = read(state_key(window), MAX_RECORD_BYTES)
        state = state_from_snapshot(json.loads(raw_state))
    except (StorageError, OSError, ValueError, KeyError) as exc:
        raise JoinError(f"validator {source_hotkey} has not published window {window} in full: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.get("checkpoint_after"):
        raise JoinError(f"the published checkpoint of window {window} has sha256 {digest[:12]}, but the record of "
                        f"window {window - 1} says {str(record.get('checkpoint_after'))[:12]}: not joining")
    if state.last_window != window - 1:
        raise JoinError(f"the published state is after window {state.last_window}, not {window - 1}")
    target = checkpoint_path(cfg.validator.workdir, window)
    atomic_write(target, data)
    atomic_write(joined_path(cfg.validator.workdir, window), raw_state)
    return Joined(window, source_hotkey, target, digest, len(state.peers))
