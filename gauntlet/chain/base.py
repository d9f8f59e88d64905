"""The chain in our own terms: the handful of reads and writes the validator and miners need.

Two implementations: `LocalChain` (a ledger in an SQLite file, the embedded default) and
`BittensorChain` (the bittensor 11 SDK). Both raise `ChainError` for every refusal and fault,
with a `reason` saying which, so callers branch the same way on either chain:
`not_registered`, `rate_limited`, `rejected` (the chain refused the call), `unavailable` (could
not reach it), `not_found` (no such block or subnet), `too_large` (commitment over the limit).
Malformed arguments (lengths, NaN, negative weights) are programming errors: `ValueError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

U16_MAX = 65535
MAX_COMMITMENT_BYTES = 3 * 128
"""The Commitments pallet holds up to 3 `Raw` fields of at most 128 bytes each."""

ChainErrorReason = Literal["not_registered", "rate_limited", "rejected", "unavailable", "not_found", "too_large"]


class ChainError(Exception):
    def __init__(self, message: str, reason: ChainErrorReason) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Neuron:
    uid: int
    hotkey: str
    stake: float
    """Total stake in the subnet's units (alpha on a dynamic-TAO subnet)."""
    validator_permit: bool
    last_update: int = 0
    """Block at which this hotkey last set weights (0: never)."""


@dataclass(frozen=True, slots=True)
class WeightsResult:
    """The chain's answer to a weight submission. The chain raises `ChainError` on a refusal; the
    validator records the refusal as `WeightsResult.failed` so audit rows hold every attempt."""

    success: bool
    message: str
    block: int | None
    uids: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    version_key: int = 0

    @classmethod
    def failed(cls, error: ChainError, block: int | None, uids: Sequence[int], weights: Sequence[float],
               version_key: int) -> WeightsResult:
        return cls(False, f"{error.reason}: {error}", block, tuple(uids), tuple(weights), version_key)


@runtime_checkable
class Chain(Protocol):
    def block(self) -> int:
        """Current block number."""
        ...

    def block_timestamp(self, block: int) -> float:
        """Unix seconds of a block (the put window is measured from these)."""
        ...

    def block_hash(self, block: int) -> str:
        """0x-hex hash of a block (seeds the window's random pages)."""
        ...

    def metagraph(self) -> list[Neuron]:
        """Registered neurons, ordered by uid."""
        ...

    def commitments(self) -> dict[int, str]:
        """uid -> commitment text, for registered hotkeys that committed."""
        ...

    def commit(self, hotkey: str, data: str) -> None:
        ...

    def set_weights(self, hotkey: str, uids: Sequence[int], weights: Sequence[float],
                    version_key: int) -> WeightsResult:
        ...


def check_weights(uids: Sequence[int], weights: Sequence[float]) -> tuple[list[int], list[float]]:
    """Shared argument checks, so both chains refuse the same inputs with the same message."""
    uids, weights = [int(u) for u in uids], [float(w) for w in weights]
    if len(uids) != len(weights):
        raise ValueError(f"uids and weights differ in length ({len(uids)} vs {len(weights)})")
    if len(set(uids)) != len(uids) or any(u < 0 or u > U16_MAX for u in uids):
        raise ValueError("uids must be distinct and in 0..65535")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError("weights must be finite and >= 0")
    if not any(w > 0 for w in weights):
        raise ValueError("all weights are zero; skip setting weights when no peer has a positive score")
    return uids, weights


def to_u16(uids: Sequence[int], weights: Sequence[float]) -> tuple[list[int], list[int]]:
    """The chain's integer form: scale so the largest weight is 65535, round, drop zeros.

    The same rule as the SDK's `bittensor.intents.weights.normalize` (a test pins the two).
    """
    uids, weights = check_weights(uids, weights)
    top = max(weights)
    pairs = [(u, round(w / top * U16_MAX)) for u, w in zip(uids, weights)]
    return [u for u, v in pairs if v], [v for _, v in pairs if v]


def check_commitment(data: str) -> bytes:
    raw = data.encode("utf-8")
    if not raw:
        raise ValueError("a commitment cannot be empty")
    if len(raw) > MAX_COMMITMENT_BYTES:
        raise ChainError(f"commitment of {len(raw)} bytes exceeds the chain's {MAX_COMMITMENT_BYTES}", "too_large")
    return raw
