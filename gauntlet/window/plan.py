"""Stage "plan": what the chain says about window W, as a small JSON-able record.

The plan is read once (it needs the chain) and stored with the window's audit row, so a replay
reruns the later stages from it without a chain.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

from gauntlet.chain import Chain, open_chain
from gauntlet.clock import ensure_ready, first_block, global_step, put_window
from gauntlet.config import GauntletConfig
from gauntlet.schedule import lr_at

PAPER_SEED = 42


@dataclass(frozen=True)
class WindowPlan:
    window: int
    first_block: int
    last_block: int
    t_min: float
    t_max: float
    block_hash: str
    seed: int
    lr: float
    peers: dict[int, str]
    """uid -> hotkey of every peer expected to submit (every uid but the validator's own)."""
    commitments: dict[int, str]
    """uid -> bucket commitment text, for the peers that committed one."""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> WindowPlan:
        fields = dict(data)
        fields["peers"] = {int(k): v for k, v in data["peers"].items()}
        fields["commitments"] = {int(k): v for k, v in data["commitments"].items()}
        return WindowPlan(**fields)


def window_seed(block_hash: str, salt: str, cfg: GauntletConfig) -> int:
    """The random-data seed of a window: ours derives it from the chain, the paper used 42.

    Derived from the hash of the window's last block plus the validator's salt, so it cannot be
    predicted before the window closes, and it is stored in the audit tables for replays.
    """
    if cfg.scoring.seed_source == "fixed":
        return PAPER_SEED
    digest = hashlib.blake2b(f"{block_hash}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def plan_window(chain: Chain, cfg: GauntletConfig, window: int, own_hotkey: str | None) -> WindowPlan:
    """Read the chain for a closed window (the chain must be past its put window)."""
    bpw = cfg.chain.blocks_per_window
    start = first_block(window, bpw)
    last = start + bpw - 1
    t_min, t_max = put_window(chain, window, bpw, cfg.filter.put_window_s)
    block_hash = chain.block_hash(last)
    peers = {n.uid: n.hotkey for n in chain.metagraph() if n.hotkey != own_hotkey}
    commitments = {u: c for u, c in chain.commitments().items() if u in peers}
    return WindowPlan(
        window=window, first_block=start, last_block=last, t_min=t_min, t_max=t_max,
        block_hash=block_hash, seed=window_seed(block_hash, cfg.scoring.salt, cfg),
        lr=lr_at(global_step(window, cfg.chain.start_window), cfg.schedule),
        peers=peers, commitments=commitments,
    )


def run(cfg: GauntletConfig, window: int) -> WindowPlan:
    """The plan of a closed window; `clock.NotReady` before the chain reaches it."""
    chain = open_chain(cfg.chain)
    ensure_ready(chain.block(), window, cfg.chain)
    return plan_window(chain, cfg, window, cfg.validator.hotkey)
