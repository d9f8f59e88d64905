"""An in-memory chain behind the bittensor SDK's `Substrate` seam, for offline tests.

Only the seam is faked: `bt.SyncClient(substrate=FakeSubstrate(...))` runs the SDK's own intents,
preflights, u16 conversion, metagraph and commitment decoding on top of it. The fake plays the
node: it serves decoded storage, runtime calls and blocks, signs nothing itself but asks the
signer to sign (so the wallet's hotkey is really used), and applies the two calls the validator
makes (`set_mechanism_weights`, `set_commitment`) with the checks the chain would run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import bittensor as bt
from bittensor.keyfiles import Keypair

_WEIGHT_CALLS = ("set_mechanism_weights", "commit_timelocked_mechanism_weights")


@dataclass
class FakeSubnet:
    netuid: int
    hotkeys: list[str]
    stakes_rao: list[int]
    permits: list[bool]
    rate_limit: int = 100
    commit_reveal: bool = False
    last_update: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last_update = self.last_update or [0] * len(self.hotkeys)


@dataclass(frozen=True)
class ComposedCall:
    module: str
    function: str
    params: dict[str, Any]


class FakeSubstrate:
    def __init__(self, subnet: FakeSubnet, *, head: int = 1000, genesis_ms: int = 1_700_000_000_000) -> None:
        self.subnet, self.head, self.genesis_ms = subnet, head, genesis_ms
        self.token_symbols: dict[int, str] = {}
        self.commitments: dict[str, dict[str, Any]] = {}  # hotkey -> decoded CommitmentOf record
        self.submitted: list[tuple[ComposedCall, str]] = []
        self.reject_with: str | None = None  # the next extrinsic fails on chain with this error
        self.unreachable = False

    # --- helpers for tests -------------------------------------------------------------------
    def hash_of(self, block: int) -> str:
        return "0x" + hashlib.sha256(f"fake-block-{block}".encode()).hexdigest()

    def ms_of(self, block: int) -> int:
        return self.genesis_ms + block * 12_000

    def _up(self) -> None:
        if self.unreachable:
            raise bt.RpcConnectionError("connection refused by ws://127.0.0.1:9944")

    def _number(self, block_hash: str | None) -> int:
        if block_hash is None:
            return self.head
        for number in range(self.head, -1, -1):
            if self.hash_of(number) == block_hash:
                return number
        raise bt.ChainError(f"unknown block {block_hash}")

    # --- the Substrate protocol ----------------------------------------------------------------
    def balance(self, rao: int, netuid: int = 0) -> bt.Balance:
        return bt.Balance(int(rao), netuid)

    async def connect(self) -> None:
        self._up()

    async def close(self) -> None:
        return None

    async def block_number(self) -> int:
        self._up()
        return self.head

    async def block_hash(self, block: int | None = None) -> str | None:
        self._up()
        block = self.head if block is None else block
        return self.hash_of(block) if 0 <= block <= self.head else None

    async def block_time(self) -> float:
        return 12.0

    async def get_block(self, block_number: int | None = None, block_hash: str | None = None) -> dict | None:
        self._up()
        number = self._number(block_hash) if block_number is None else block_number
        if not 0 <= number <= self.head:
            return None
        stamp = {"call": {"call_module": "Timestamp", "call_function": "set",
                          "call_args": [{"name": "now", "value": self.ms_of(number)}]}}
        return {"header": {"number": number, "hash": self.hash_of(number),
                           "parentHash": self.hash_of(number - 1)}, "extrinsics": [stamp]}

    def _uids(self) -> dict[str, int]:
        return {hotkey: uid for uid, hotkey in enumerate(self.subnet.hotkeys)}

    async def query(self, module: str, storage_function: str, params: list | None = None,
                    block_hash: str | None = None) -> Any:
        self._up()
        params, sub = list(params or []), self.subnet
        if (module, storage_function) == ("Timestamp", "Now"):
            return self.ms_of(self._number(block_hash))
        if (module, storage_function) == ("SubtensorModule", "Uids"):
            return self._uids().get(params[1]) if params[0] == sub.netuid else None
        if (module, storage_function) == ("SubtensorModule", "LastUpdate"):
            return list(sub.last_update) if params[0] == sub.netuid else None
        scalars = {"CommitRevealWeightsEnabled": sub.commit_reveal, "WeightsSetRateLimit": sub.rate_limit,
                   "MinAllowedWeights": 0, "MaxWeightsLimit": 65535, "SubnetEpochConsensus": "Yuma",
                   "Tempo": 360, "RevealPeriodEpochs": 1}
        if module == "SubtensorModule" and storage_function in scalars and params[:1] == [sub.netuid]:
            return scalars[storage_function]
        return None

    async def query_map(self, module: str, storage_function: str, params: list | None = None,
                        block_hash: str | None = None) -> list[tuple[Any, Any]]:
        self._up()
        if params and params[0] != self.subnet.netuid:
            return []
        if (module, storage_function) == ("Commitments", "CommitmentOf"):
            return list(self.commitments.items())
        if (module, storage_function) == ("SubtensorModule", "Uids"):
            return list(self._uids().items())
        return []  # RevealedCommitments, TokenSymbol, ...: empty on this chain

    async def runtime_call(self, api: str, method: str, params: list, block_hash: str | None = None) -> Any:
        self._up()
        if (api, method) != ("SubnetInfoRuntimeApi", "get_metagraph") or params != [self.subnet.netuid]:
            return None
        sub = self.subnet
        return {"netuid": sub.netuid, "name": list(b"gauntlet"), "symbol": list(b"g"), "block": self.head,
                "tempo": 360, "last_step": 0, "blocks_since_last_step": 0, "owner_hotkey": sub.hotkeys[0],
                "owner_coldkey": sub.hotkeys[0], "network_registered_at": 1, "num_uids": len(sub.hotkeys),
                "hotkeys": list(sub.hotkeys), "coldkeys": list(sub.hotkeys), "validator_permit": list(sub.permits),
                "last_update": list(sub.last_update), "total_stake": list(sub.stakes_rao),
                "active": [True] * len(sub.hotkeys)}

    async def constant(self, module: str, name: str) -> Any:
        return {("Aura", "SlotDuration"): 12_000, ("Commitments", "MaxFields"): 3}.get((module, name))

    async def compose(self, call: Any) -> ComposedCall:
        self._up()
        module, function, params = call
        if (module, function) == ("Commitments", "set_commitment"):
            _decode_fields(params["info"]["fields"])  # the codec refuses what the runtime cannot hold
        return ComposedCall(module, function, dict(params))

    async def estimate_fee(self, call: Any, keypair: Any) -> bt.Balance:
        return bt.Balance(1000, 0)

    async def submit(self, call: ComposedCall, keypair: Any, *, nonce: int | None = None, period: int | None = None,
                     wait_for_inclusion: bool = True, wait_for_finalization: bool = True) -> bt.ExtrinsicResult:
        self._up()
        payload = repr((call.module, call.function, sorted(call.params))).encode()
        signature = keypair.sign(payload)
        if not Keypair(ss58_address=keypair.ss58_address).verify(payload, signature):
            return _failed("BadProof", "invalid signature")
        self.submitted.append((call, keypair.ss58_address))
        if self.reject_with is not None:
            name, self.reject_with = self.reject_with, None
            return _failed(name, f"the runtime refused the call: {name}")
        self.head += 1  # included in a new block
        error = self._apply(call, keypair.ss58_address)
        if error is not None:
            return _failed(*error)
        return bt.ExtrinsicResult(success=True, message="Success", block_hash=self.hash_of(self.head),
                                  extrinsic_id=f"{self.head}-0001")

    def _apply(self, call: ComposedCall, signer: str) -> tuple[str, str] | None:
        """The chain's dispatch for the two calls the validator makes; an error name on refusal."""
        uid = self._uids().get(signer)
        if call.params.get("netuid") != self.subnet.netuid:
            return ("SubnetNotExists", "no such subnet")
        if call.module == "SubtensorModule" and call.function in _WEIGHT_CALLS:
            if uid is None:
                return ("HotKeyNotRegisteredInSubNet", "hotkey not registered")
            if call.function == "set_mechanism_weights":  # a timelocked commit applies at reveal
                self.subnet.last_update[uid] = self.head
            return None
        if (call.module, call.function) == ("Commitments", "set_commitment"):
            if uid is None:
                return ("AccountNotAllowedCommit", "hotkey not registered")
            fields = call.params["info"]["fields"]
            if len(fields) > 3:
                return ("TooManyFieldsInCommitmentInfo", "more than MaxFields fields")
            self.commitments[signer] = {"block": self.head, "deposit": 0, "info": {"fields": _decode_fields(fields)}}
            return None
        return ("CallFiltered", f"{call.module}.{call.function} is not modelled by the fake")


def _decode_fields(fields: list) -> list[dict[str, str]]:
    """Encode-then-decode of `Data` fields: `RawN` must carry exactly N <= 128 bytes; read back as hex."""
    decoded = []
    for entry in fields:
        ((variant, data),) = entry.items()
        if not isinstance(data, bytes) or variant != f"Raw{len(data)}" or len(data) > 128:
            raise bt.ChainError(f"cannot encode commitment field {variant} holding {data!r:.40}")
        decoded.append({variant: "0x" + data.hex()})
    return decoded


def _failed(name: str, text: str) -> bt.ExtrinsicResult:
    return bt.ExtrinsicResult(success=False, message=text, error=bt.ChainError(text, name))
