"""The alerts, applied twice to a real Prefect server: one automation of each kind, as defined."""

from __future__ import annotations

import pytest
from prefect.automations import AutomationCore
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.automations import FAILED_RUN, MISSING_WINDOW, apply, definitions
from deployments.limits import ensure_limits
from tasks.limits import WINDOW_LOCK
from gauntlet.config import load_config
from tests.flows.prefect_server import PrefectServer

pytestmark = [pytest.mark.integration]


def test_definitions_follow_the_window_length():
    cfg = load_config(overrides=["chain.blocks_per_window=8", "chain.block_time_s=12"])
    failed, missing = definitions(cfg)
    assert missing.trigger.within.total_seconds() == 2 * 96
    assert missing.trigger.posture == "Proactive" and missing.trigger.expect == {"gauntlet.window.validated"}
    assert failed.trigger.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    fast = load_config(overrides=["chain.blocks_per_window=2", "chain.block_time_s=1"])
    assert definitions(fast)[1].trigger.within.total_seconds() == 10.0  # Prefect's floor for proactive
    with pytest.raises(ValueError, match="missing_after_windows"):
        definitions(cfg, missing_after_windows=0)


def test_applying_twice_keeps_one_of_each(live_server: PrefectServer):
    cfg = load_config(overrides=["chain.blocks_per_window=8", "chain.block_time_s=12"])
    with temporary_settings(updates={PREFECT_API_URL: live_server.url}):
        first = apply(definitions(cfg))
        with get_client(sync_client=True) as client:  # a duplicate left by an older, non-idempotent setup
            client.create_automation(AutomationCore(**definitions(cfg)[1].model_dump(exclude={"id"})))
        second = apply(definitions(cfg, missing_after_windows=3))
        assert ensure_limits() == ensure_limits() == {WINDOW_LOCK: 1}
    assert second[0] == first[0]  # updated in place, not recreated
    with live_server.api() as api:
        stored = api.post("/automations/filter", json={}).json()
    names = sorted(a["name"] for a in stored if a["name"].startswith("gauntlet-"))
    assert names == sorted([FAILED_RUN, MISSING_WINDOW])
    missing = next(a for a in stored if a["name"] == MISSING_WINDOW)
    assert missing["trigger"]["posture"] == "Proactive"
    assert missing["trigger"]["within"] == 3 * 96.0  # the second apply updated it
    failed = next(a for a in stored if a["name"] == FAILED_RUN)
    assert failed["trigger"]["match_related"]["prefect.resource.name"] == ["validate-window", "follow-chain"]
