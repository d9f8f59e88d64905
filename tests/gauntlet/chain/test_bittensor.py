"""BittensorChain over the real bittensor 11 SDK, with a fake node behind its `substrate=` seam."""

from __future__ import annotations

import random
from pathlib import Path

import bittensor as bt
import pytest
from bittensor.intents.weights import normalize
from bittensor.keyfiles import Keypair

from gauntlet.chain import ChainError, open_chain, to_u16
from gauntlet.chain.bittensor import BittensorChain
from gauntlet.config import ChainConfig
from gauntlet.storage import BucketSpec
from tests.gauntlet.chain.fake_substrate import FakeSubnet, FakeSubstrate

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
MINERS = [Keypair.create_from_uri(f"//Miner{i}").ss58_address for i in range(3)]


def make_wallet(path: Path, keypair: Keypair, name: str = "validator") -> None:
    """An unencrypted hotkey file and a public coldkey file, as `btcli wallet` would write them."""
    wallet = bt.Wallet(name, "default", path=str(path))
    wallet.hotkey_file.set_keypair(keypair, encrypt=False, overwrite=True)
    wallet.coldkeypub_file.set_keypair(Keypair(ss58_address=keypair.ss58_address), encrypt=False, overwrite=True)


@pytest.fixture(autouse=True)
def _sdk_cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK caches token symbols under ~/.bittensor when it connects; keep that out of $HOME."""
    monkeypatch.setenv("BTCLI_TOKEN_SYMBOLS_CACHE", str(tmp_path / "token_symbols.json"))


@pytest.fixture
def fake() -> FakeSubstrate:
    subnet = FakeSubnet(netuid=3, hotkeys=[ALICE.ss58_address, *MINERS],
                        stakes_rao=[5_000 * 10**9, 0, 10**9, 0], permits=[True, False, False, False], rate_limit=50)
    return FakeSubstrate(subnet, head=1000)


@pytest.fixture
def chain(tmp_path: Path, fake: FakeSubstrate) -> BittensorChain:
    make_wallet(tmp_path / "wallets", ALICE)
    chain = BittensorChain("test", 3, "validator", "default", str(tmp_path / "wallets"), substrate=fake)
    yield chain
    chain.close()


def test_u16_conversion_matches_the_sdk() -> None:
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 40)
        weights = [rng.choice([0.0, rng.random(), rng.random() ** 8]) for _ in range(n)]
        weights[rng.randrange(n)] = rng.random() + 1e-3
        uids = rng.sample(range(256), n)
        assert to_u16(uids, weights) == normalize(uids, weights)


def test_reads_block_time_hash_and_metagraph(chain: BittensorChain, fake: FakeSubstrate) -> None:
    assert chain.block() == 1000
    assert chain.block_timestamp(992) == fake.ms_of(992) / 1000
    assert chain.block_hash(992) == fake.hash_of(992)
    with pytest.raises(ChainError) as caught:
        chain.block_timestamp(1001)
    assert caught.value.reason == "not_found"
    graph = chain.metagraph()
    assert [(n.uid, n.hotkey, n.stake, n.validator_permit) for n in graph] == [
        (0, ALICE.ss58_address, 5000.0, True), (1, MINERS[0], 0.0, False),
        (2, MINERS[1], 1.0, False), (3, MINERS[2], 0.0, False)]


def test_set_weights_composes_set_mechanism_weights_with_u16(chain: BittensorChain, fake: FakeSubstrate) -> None:
    result = chain.set_weights(ALICE.ss58_address, [1, 2, 3], [0.5, 0.25, 0.0], version_key=7)
    ((call, signer),) = fake.submitted
    assert (call.module, call.function, signer) == ("SubtensorModule", "set_mechanism_weights", ALICE.ss58_address)
    assert call.params == {"netuid": 3, "mecid": 0, "dests": [1, 2], "weights": [65535, 32768], "version_key": 7}
    assert (result.success, result.block, result.uids, result.version_key) == (True, 1001, (1, 2, 3), 7)
    assert fake.subnet.last_update[0] == 1001


def test_rate_limited_weights_raise_before_signing(chain: BittensorChain, fake: FakeSubstrate) -> None:
    fake.subnet.last_update[0] = 990  # 10 blocks ago; the subnet allows one set per 50
    with pytest.raises(ChainError, match="Retry in ~40 blocks") as caught:
        chain.set_weights(ALICE.ss58_address, [1], [1.0], 0)
    assert caught.value.reason == "rate_limited" and fake.submitted == []


def test_unregistered_hotkey_cannot_set_weights(tmp_path: Path, fake: FakeSubstrate) -> None:
    make_wallet(tmp_path / "w", BOB, name="bob")
    chain = BittensorChain("test", 3, "bob", "default", str(tmp_path / "w"), substrate=fake)
    with pytest.raises(ChainError, match="not registered") as caught:
        chain.set_weights(BOB.ss58_address, [1], [1.0], 0)
    assert caught.value.reason == "not_registered"
    with pytest.raises(ChainError) as caught:
        chain.commit(BOB.ss58_address, "g1|local|x")
    assert caught.value.reason == "not_registered" and fake.submitted == []
    chain.close()


def test_a_refusing_chain_is_a_clear_error(chain: BittensorChain, fake: FakeSubstrate) -> None:
    fake.reject_with = "IncorrectWeightVersionKey"
    with pytest.raises(ChainError, match="IncorrectWeightVersionKey") as caught:
        chain.set_weights(ALICE.ss58_address, [1], [1.0], 0)
    assert caught.value.reason == "rejected"


def test_an_unreachable_chain_is_unavailable(chain: BittensorChain, fake: FakeSubstrate) -> None:
    fake.unreachable = True
    for call in (chain.block, chain.metagraph, chain.commitments,
                 lambda: chain.set_weights(ALICE.ss58_address, [1], [1.0], 0)):
        with pytest.raises(ChainError, match="unreachable") as caught:
            call()
        assert caught.value.reason == "unavailable"


def test_commitments_round_trip_through_the_sdk_decoder(chain: BittensorChain, fake: FakeSubstrate) -> None:
    spec = BucketSpec(kind="s3", endpoint_url="https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com",
                      bucket="validator-bucket", region="auto", access_key_id="k" * 32, secret_access_key="s" * 64)
    text = spec.to_commitment()
    chain.commit(ALICE.ss58_address, text)
    ((call, _),) = fake.submitted
    sizes = [int(next(iter(f)).removeprefix("Raw")) for f in call.params["info"]["fields"]]
    assert sizes == [128, len(text.encode()) - 128]  # split into Raw fields of <= 128 bytes
    fake.commitments[MINERS[1]] = {"block": 900, "deposit": 0, "info": {"fields": [{"Raw5": "0x" + b"hello".hex()}]}}
    fake.commitments["5Deregistered"] = {"block": 800, "deposit": 0, "info": {"fields": [{"Raw3": "0x" + b"old".hex()}]}}
    assert chain.commitments() == {0: text, 2: "hello"}
    assert BucketSpec.from_commitment(chain.commitments()[0]) == spec
    with pytest.raises(ChainError) as caught:
        chain.commit(ALICE.ss58_address, "x" * 400)
    assert caught.value.reason == "too_large"


def test_the_chain_signs_only_as_its_own_hotkey(chain: BittensorChain) -> None:
    assert chain.hotkey == ALICE.ss58_address
    with pytest.raises(ValueError, match="signs with hotkey"):
        chain.commit(MINERS[0], "g1|local|x")


def test_commit_reveal_subnets_get_a_timelocked_commit(chain: BittensorChain, fake: FakeSubstrate) -> None:
    fake.subnet.commit_reveal = True
    chain.set_weights(ALICE.ss58_address, [1, 2], [0.6, 0.4], version_key=1)
    ((call, _),) = fake.submitted
    assert (call.module, call.function) == ("SubtensorModule", "commit_timelocked_mechanism_weights")
    assert call.params["netuid"] == 3 and call.params["reveal_round"] > 0


def test_open_chain_builds_the_sdk_adapter(tmp_path: Path, fake: FakeSubstrate) -> None:
    make_wallet(tmp_path / "wallets", ALICE)
    cfg = ChainConfig(network="test", netuid=3, wallet_name="validator", wallet_path=str(tmp_path / "wallets"))
    chain = open_chain(cfg, substrate=fake)
    assert isinstance(chain, BittensorChain) and chain.block() == 1000
    chain.close()


def test_the_validators_hotkey_comes_from_its_wallet(tmp_path: Path) -> None:
    from gauntlet.config import ConfigError, load_config
    from gauntlet.identity import with_identity

    make_wallet(tmp_path, ALICE)
    cfg = load_config(overrides=["chain.network=finney", f"chain.wallet_path={tmp_path}",
                                 "chain.wallet_name=validator", "validator.hotkey=placeholder"])
    assert with_identity(cfg).validator.hotkey == ALICE.ss58_address
    local = load_config(overrides=["validator.hotkey=me"])
    assert with_identity(local) is local  # the local ledger keeps the configured name
    missing = load_config(overrides=["chain.network=finney", f"chain.wallet_path={tmp_path / 'none'}"])
    with pytest.raises(ConfigError, match="wallet hotkey is missing"):
        with_identity(missing)
