"""`BittensorChain`: the `Chain` protocol over the bittensor 11 SDK (`bt.SyncClient`).

The SDK does the chain work: `SetWeights` checks registration and the rate limit, clips to
the subnet's max weight, converts to u16 and picks the plain or commit-reveal call; commitments
are decoded by the SDK's own reader. This adapter only translates to our types and errors, so
that a flow treats a refusal on finney exactly like one on the local ledger.

The SDK's client accepts `substrate=` (its chain-access seam); tests inject a fake there and
the SDK's logic above it runs for real.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import bittensor as bt
from bittensor.error_map import ErrorCode

from gauntlet.config import ChainConfig
from gauntlet.chain.base import (
    ChainError,
    ChainErrorReason,
    Neuron,
    WeightsResult,
    check_commitment,
    check_weights,
)

_RAW_FIELD_BYTES = 128
_WRITE_REASONS: dict[ErrorCode, ChainErrorReason] = {
    ErrorCode.NOT_REGISTERED: "not_registered",
    ErrorCode.RATE_LIMITED: "rate_limited",
    ErrorCode.SUBNET_NOT_EXISTS: "not_found",
}


class BittensorChain:
    """One subnet on a bittensor network, signing with one wallet's hotkey."""

    def __init__(self, network: str, netuid: int, wallet_name: str = "default", wallet_hotkey: str = "default",
                 wallet_path: str = "~/.bittensor/wallets", *, substrate: Any = None,
                 fallback_endpoints: list[str] | None = None) -> None:
        """`network`: `finney`, `test`, `local` or a `ws://`/`wss://` URL. The wallet files are read
        only when something is signed, so a read-only user needs none."""
        self.netuid = int(netuid)
        self.wallet = bt.Wallet(wallet_name, wallet_hotkey, path=os.path.expanduser(wallet_path))
        self._client = bt.SyncClient(network, fallback_endpoints=fallback_endpoints, substrate=substrate)

    def __repr__(self) -> str:
        return f"BittensorChain({self._client.network!r}, netuid={self.netuid})"

    def close(self) -> None:
        self._client.close()

    @property
    def hotkey(self) -> str:
        """The signing hotkey's ss58 address (from the public key file when there is one)."""
        return wallet_ss58(self.wallet)

    @contextmanager
    def _sdk(self, what: str, write: bool = False) -> Iterator[None]:
        try:
            yield
        except (bt.RpcConnectionError, bt.ConnectionNotReady, TimeoutError) as exc:
            raise ChainError(f"{what} on {self}: chain unreachable: {exc}", "unavailable") from exc
        except bt.ChainError as exc:
            reason = _WRITE_REASONS.get(exc.code, "rejected") if write else "unavailable"
            raise ChainError(f"{what} on {self}: {exc}", reason) from exc
        except bt.BittensorError as exc:  # PolicyError, weights the subnet's rules refuse, ...
            raise ChainError(f"{what} on {self}: {exc}", "rejected") from exc

    def block(self) -> int:
        with self._sdk("read the head block"):
            return int(self._client.block)

    def _check_exists(self, block: int) -> None:
        """The SDK resolves a future block to no hash and then reads the head; refuse that here."""
        if not 0 <= block <= self.block():
            raise ChainError(f"block {block} does not exist (yet) on {self}", "not_found")

    def block_timestamp(self, block: int) -> float:
        """From `Timestamp.Now` at that block (a state read the SDK retries on archive nodes)."""
        self._check_exists(block)
        with self._sdk(f"read the timestamp of block {block}"):
            return float(self._client.timestamp(block).timestamp())

    def block_hash(self, block: int) -> str:
        self._check_exists(block)
        with self._sdk(f"read block {block}"):
            info = self._client.block_info(block)
        if info is None or not info.hash:
            raise ChainError(f"the node returned no header for block {block}", "unavailable")
        return str(info.hash)

    def metagraph(self) -> list[Neuron]:
        with self._sdk("read the metagraph"):
            graph = self._client.subnets.metagraph(self.netuid, commitments=False)
        if graph is None:
            raise ChainError(f"subnet {self.netuid} does not exist on {self}", "not_found")
        return [Neuron(n.uid, n.hotkey, float(n.total_stake.amount), bool(n.validator_permit), int(n.last_update))
                for n in graph.neurons]

    def commitments(self) -> dict[int, str]:
        """Visible commitments of registered hotkeys (sealed timelocked ones are left out)."""
        with self._sdk("read commitments"):
            found = self._client.subnets.commitments(self.netuid)
        return {int(c.uid): c.value for c in found.values() if c.uid is not None and c.value}

    def _check_signer(self, hotkey: str) -> None:
        if hotkey != self.hotkey:
            raise ValueError(f"this chain signs with hotkey {self.hotkey}; cannot act as {hotkey}")

    def commit(self, hotkey: str, data: str) -> None:
        """Plain `Raw` fields of up to 128 bytes each; the SDK's reader joins them back."""
        self._check_signer(hotkey)
        raw = check_commitment(data)
        with self._sdk("read registration"):
            registered = self._client.query(bt.storage.SubtensorModule.Uids, [self.netuid, hotkey]) is not None
        if not registered:  # the chain would say AccountNotAllowedCommit; say what it means
            raise ChainError(f"hotkey {hotkey} is not registered on netuid {self.netuid}", "not_registered")
        chunks = [raw[i:i + _RAW_FIELD_BYTES] for i in range(0, len(raw), _RAW_FIELD_BYTES)]
        info = {"fields": [{f"Raw{len(chunk)}": chunk} for chunk in chunks]}
        call = bt.calls.Commitments.set_commitment(netuid=self.netuid, info=info)
        with self._sdk("commit", write=True):
            result = self._client.submit_call(call, self.wallet, signer="hotkey")
            result.raise_for_failure()

    def set_weights(self, hotkey: str, uids: Sequence[int], weights: Sequence[float],
                    version_key: int) -> WeightsResult:
        """Through the SDK's `SetWeights` intent (u16 conversion, clipping, commit-reveal)."""
        self._check_signer(hotkey)
        uids, weights = check_weights(uids, weights)
        intent = bt.SetWeights(netuid=self.netuid, uids=uids, weights=weights, version_key=int(version_key))
        with self._sdk("set weights", write=True):
            result = self._client.execute(intent, self.wallet)
            result.raise_for_failure()
            block = int(result.extrinsic_id.split("-")[0]) if result.extrinsic_id else int(self._client.block)
        return WeightsResult(True, result.message, block, tuple(uids), tuple(weights), int(version_key))


def wallet_ss58(wallet: bt.Wallet) -> str:
    """A wallet's hotkey address, read offline (the public key file when there is one)."""
    try:
        return wallet.hotkeypub.ss58_address
    except FileNotFoundError:
        return wallet.hotkey.ss58_address


def wallet_hotkey(cfg: ChainConfig) -> str:
    """The ss58 address of the hotkey the config's wallet signs with; no network access."""
    return wallet_ss58(bt.Wallet(cfg.wallet_name, cfg.wallet_hotkey, path=os.path.expanduser(cfg.wallet_path)))
