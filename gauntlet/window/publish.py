"""Stages "weights" and "publish": what the validator tells the chain and the peers.

"weights" sets the peers' weights on chain when due (every `weights.set_every` windows, or when
forced), at most once per window: a rerun keeps the recorded answer unless forced. A refusal
(rate limit, not registered, node down) never fails the window: it is recorded with the chain's
message and the weights are set again when next due. "publish" writes the gather schedule to the
validator's own committed bucket, for the miners; it is a separate stage with its own retries, so
a failed publication never resends weights.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from gauntlet.audit.store import AuditStore
from gauntlet.chain import Chain, ChainError, WeightsResult, open_chain
from gauntlet.config import GauntletConfig
from gauntlet.ratings import ValidatorState
from gauntlet.storage import Bucket, BucketSpec, atomic_write
from gauntlet.weights import due_on_chain
from gauntlet.state import state_snapshot
from gauntlet.window.context import checkpoint_path
from gauntlet.window.fetch import Fetched
from gauntlet.window.rate import Rated
from gauntlet.window.step import Stepped

GATHER_KEY = "gauntlet/v1/gather.json"


def set_weights(chain: Chain, cfg: GauntletConfig, window: int, weights: Mapping[int, float],
                force: bool = False) -> WeightsResult | None:
    """Set weights when due (or forced); None when not due. Refusals come back as failed results."""
    if not (force or due_on_chain(window, cfg.chain, cfg.weights)):
        return None
    uids = sorted(u for u, w in weights.items() if w > 0)
    if not uids:
        return WeightsResult(False, "no peer has a positive weight; nothing set", None)
    values = [weights[u] for u in uids]
    try:
        return chain.set_weights(cfg.validator.hotkey, uids, values, cfg.chain.version_key)
    except ChainError as exc:
        return WeightsResult.failed(exc, None, uids, values, cfg.chain.version_key)


def recorded_weights(cfg: GauntletConfig, window: int) -> WeightsResult | None:
    """The chain's answer recorded for a window's weights (None if they were not set)."""
    store = AuditStore(cfg.audit.root)
    if not store.has_window(window):
        return None
    rows = store.read("weights", window_id=window).filter(pl.col("set_on_chain"))
    if rows.is_empty():
        return None
    row = rows.row(0, named=True)
    return WeightsResult(bool(row["chain_success"]), row["chain_message"], row["set_at_block"])


class WeightsJournal:
    """At most one weight submission per window, even across a crash or a task retry.

    Before sending, the validator writes an intent holding the block at which the chain last
    recorded its weights; after, the chain's answer. A window redone after a kill finds the
    intent without an answer: if the chain's record of the validator's last weights moved since,
    they went through and are not sent again. (Two submissions in one block cannot be told
    apart; a real chain's rate limit forbids them.)
    """

    def __init__(self, workdir: str | Path) -> None:
        self.folder = Path(workdir) / "weights-journal"

    def _path(self, window: int) -> Path:
        return self.folder / f"{window:08d}.json"

    def read(self, window: int) -> dict | None:
        path = self._path(window)
        return json.loads(path.read_text()) if path.exists() else None

    def write(self, window: int, entry: dict) -> None:
        atomic_write(self._path(window), json.dumps(entry).encode())

    @staticmethod
    def last_update(chain: Chain, hotkey: str) -> int:
        return max((n.last_update for n in chain.metagraph() if n.hotkey == hotkey), default=0)

    def landed(self, chain: Chain, hotkey: str, window: int) -> WeightsResult | None:
        """The answer for a window already sent (recorded, or found on chain after an intent)."""
        entry = self.read(window)
        if entry is None:
            return None
        if "answer" in entry:
            return WeightsResult(**entry["answer"])
        last = self.last_update(chain, hotkey)
        if last != entry["last_update"]:
            return WeightsResult(True, f"set before the validator restarted (chain updated at block {last})", last)
        return None


def weights(cfg: GauntletConfig, window: int, rated: Rated, force: bool = False,
            rerun: bool = False) -> WeightsResult | None:
    """Stage "weights"; a rerun keeps the recorded answer and sets nothing unless forced; a
    window redone after a crash never sends its weights twice (`WeightsJournal`)."""
    if rerun and not force:
        return recorded_weights(cfg, window)
    chain = open_chain(cfg.chain)
    journal = WeightsJournal(cfg.validator.workdir)
    if not force and (known := journal.landed(chain, cfg.validator.hotkey, window)) is not None:
        return known
    if not (force or due_on_chain(window, cfg.chain, cfg.weights)):
        return None
    intent = {"last_update": journal.last_update(chain, cfg.validator.hotkey)}
    journal.write(window, intent)
    result = set_weights(chain, cfg, window, rated.weights, force=True)
    journal.write(window, {**intent, "answer": {"success": result.success, "message": result.message,
                                                 "block": result.block}})
    return result


@dataclass(frozen=True)
class Published:
    """Result of stage "publish"."""

    published: bool
    detail: str


def aggregated_key(window: int) -> str:
    """What the validator aggregated in window W: uids, their files' hashes, theta_{W+1}'s hash."""
    return f"gauntlet/v1/aggregated/{window:08d}.json"


def checkpoint_key(window: int) -> str:
    """theta_W, as published for joining validators and miners."""
    return f"gauntlet/v1/checkpoints/{window:08d}.safetensors"


def state_key(window: int) -> str:
    """The validator's state after window W - 1 (what window W starts from), as JSON."""
    return f"gauntlet/v1/state/{window:08d}.json"


def own_bucket(chain: Chain, hotkey: str) -> Bucket | None:
    own = [n.uid for n in chain.metagraph() if n.hotkey == hotkey]
    commitment = chain.commitments().get(own[0]) if own else None
    return None if commitment is None else Bucket.from_spec(BucketSpec.from_commitment(commitment))


def _aggregated(window: int, stepped: Stepped, fetched: Fetched) -> dict:
    hashes = {r.uid: r.content_hash for r in fetched.records}
    return {"window": window, "uids": list(stepped.gather), "hashes": {str(u): hashes[u] for u in stepped.gather},
            "checkpoint_after": stepped.checkpoint_after}


def publish_window(cfg: GauntletConfig, bucket: Bucket, window: int, state: ValidatorState, stepped: Stepped,
                   fetched: Fetched) -> list[str]:
    """The gather schedule, what was aggregated, and every `publish_checkpoint_every` windows the
    checkpoint theta_{W+1} with the state it starts from: one truth for miners and joiners."""
    bucket.put(GATHER_KEY, json.dumps({"schedule": [[e, list(u)] for e, u in state.gather_schedule],
                                       "window": state.last_window}).encode())
    bucket.put(aggregated_key(window), json.dumps(_aggregated(window, stepped, fetched)).encode())
    keys = [GATHER_KEY, aggregated_key(window)]
    every = cfg.validator.publish_checkpoint_every
    if every and (window + 1) % every == 0:
        bucket.put(checkpoint_key(window + 1), checkpoint_path(cfg.validator.workdir, window + 1).read_bytes())
        bucket.put(state_key(window + 1), json.dumps(state_snapshot(state)).encode())
        keys += [checkpoint_key(window + 1), state_key(window + 1)]
    return keys


def publish(cfg: GauntletConfig, window: int, rated: Rated, stepped: Stepped, fetched: Fetched,
            rerun: bool = False) -> Published:
    """Stage "publish". A rerun of an old window publishes nothing: it would replace the newer
    schedule that the miners follow now."""
    if rerun:
        return Published(False, "rerun: the schedule in force was left as it is")
    chain = open_chain(cfg.chain)
    bucket = own_bucket(chain, cfg.validator.hotkey)
    if bucket is None:
        return Published(False, "the validator has no bucket committed on chain; nothing published")
    state = replace(rated.state, sync_ema=stepped.sync_ema)
    return Published(True, "wrote " + ", ".join(publish_window(cfg, bucket, window, state, stepped, fetched)))
