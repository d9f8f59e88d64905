"""Joining a running network: a second validator starts midway from the first one's published
checkpoint and state, and its audit rows for the later windows equal the first one's."""

from __future__ import annotations

import json

import pytest

from gauntlet.audit.store import AuditStore
from gauntlet.config import with_overrides
from gauntlet.join import JoinError, join
from gauntlet.replay import NOT_RECOMPUTED
from gauntlet.storage import Bucket
from gauntlet.window.pipeline import Direct, validate_window
from gauntlet.window.publish import checkpoint_key

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def running(validated_network):
    return validated_network[0]  # 5 windows mined, 0-3 validated, each publishing its checkpoint


def test_a_second_validator_joins_midway_and_agrees(running, tmp_path):
    net, first = running, AuditStore(running.config.audit.root)
    assert first.windows() == [0, 1, 2, 3]
    cfg = with_overrides(net.config, {"validator": {"workdir": str(tmp_path / "work")},
                                      "audit": {"root": str(tmp_path / "audit")}})
    got = join(cfg, 2, net.config.validator.hotkey)
    assert got.window == 2 and got.checkpoint.exists() and got.peers == len(net.peers)
    second = AuditStore(cfg.audit.root)
    for window in (2, 3):
        validate_window(Direct(), cfg, window, rerun=True)  # a rerun: it sets no weights of its own
        for table in ("verdicts", "scores", "ratings", "weights", "windows", "submissions"):
            skip = {"archived_path", "config_json", *NOT_RECOMPUTED.get(table, ())}
            ours, theirs = (s.read(table, window_id=window) for s in (second, first))
            keep = [c for c in theirs.columns if c not in skip]
            assert ours.select(keep).equals(theirs.select(keep)), (table, window)


def test_a_tampered_checkpoint_is_refused(running, tmp_path):
    net = running
    bucket = net.bucket(net.validator.uid)
    key = checkpoint_key(2)
    original = bucket.get(key, max_bytes=2**30, timeout_s=30)
    bucket.put(key, original[:-1] + bytes([original[-1] ^ 1]))
    try:
        cfg = with_overrides(net.config, {"validator": {"workdir": str(tmp_path / "w")}})
        with pytest.raises(JoinError, match="sha256"):
            join(cfg, 2, net.config.validator.hotkey)
        with pytest.raises(JoinError, match="no registered validator"):
            join(cfg, 2, "nobody")
        with pytest.raises(JoinError, match="not published"):
            join(cfg, 40, net.config.validator.hotkey)
    finally:
        bucket.put(key, original)
    assert json.loads(bucket.get("gauntlet/v1/aggregated/00000002.json", max_bytes=2**20, timeout_s=30))["uids"]
