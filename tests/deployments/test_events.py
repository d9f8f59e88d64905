"""The window's events reach a real Prefect server with their window, uids and counts."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tasks.events import PEER_BANNED, VALIDATED, VALIDATOR_FAULT, WEIGHTS_FAILED, WEIGHTS_SET, window_events
from tests.flows.prefect_server import ROOT, PrefectServer, wait_until

VERDICTS = [
    {"uid": 0, "reason": "ok", "detail": "", "stage": "score", "blame": "none"},
    {"uid": 1, "reason": "ok", "detail": "", "stage": "score", "blame": "none"},
    {"uid": 2, "reason": "copied", "detail": "overlap 0.97 with uid 0", "stage": "copy", "blame": "peer"},
    {"uid": 3, "reason": "infrastructure", "detail": "bucket answered 503", "stage": "fetch",
     "blame": "infrastructure"},
]
EMIT = """
import json, sys
from prefect.events.worker import EventsWorker
from tasks.events import emit_window_events
args = json.loads(sys.argv[1])
events = emit_window_events(7, args["verdicts"], {0: 0.6, 1: 0.4, 2: 0.0}, {"success": True, "message": "ok",
                            "block": 70}, {2: "ban"}, [0, 1], hotkey="vali")
EventsWorker.drain_all(at_exit=False)
print(len(events))
"""


def test_window_events_carry_window_uids_and_counts():
    events = window_events(7, VERDICTS, {0: 0.6, 1: 0.4, 2: 0.0}, {"success": False, "message": "rate_limited: x",
                                                                   "block": None}, {2: "ban", 1: "halve"}, [1, 0])
    by_name = {name: (payload, uid) for name, payload, uid in events}
    assert [name for name, _, _ in events] == [VALIDATED, WEIGHTS_FAILED, PEER_BANNED, VALIDATOR_FAULT]
    assert by_name[VALIDATED][0] == {"window": 7, "peers": 4, "ok": 2, "weighted_peers": 2, "gather": [0, 1],
                                     "verdicts": {"copied": 1, "infrastructure": 1, "ok": 2}}
    assert by_name[WEIGHTS_FAILED][0]["uids"] == [0, 1] and not by_name[WEIGHTS_FAILED][0]["success"]
    assert by_name[PEER_BANNED] == ({"window": 7, "uid": 2, "action": "ban"}, 2)
    assert by_name[VALIDATOR_FAULT][0]["uids"] == [3] and by_name[VALIDATOR_FAULT][0]["count"] == 1
    quiet = window_events(8, VERDICTS[:2], {0: 1.0}, None)
    assert [name for name, _, _ in quiet] == [VALIDATED]  # weights not due: no weights event


@pytest.mark.integration
def test_events_arrive_at_a_real_server(live_server: PrefectServer):
    result = subprocess.run([sys.executable, "-c", EMIT, json.dumps({"verdicts": VERDICTS})],
                            env=live_server.client_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "4"
    with live_server.api() as api:
        def arrived():
            response = api.post("/events/filter", json={
                "filter": {"event": {"prefix": ["gauntlet."]}, "resource": {"labels": {"gauntlet.window": ["7"]}}},
                "limit": 50})
            events = response.json()["events"] if response.status_code == 200 else []
            return len(events) >= 4 and events

        events = wait_until(arrived, 60.0, "events on the server", live_server.proc, live_server.log)
    by_name = {e["event"]: e for e in events}
    assert set(by_name) == {VALIDATED, WEIGHTS_SET, PEER_BANNED, VALIDATOR_FAULT}
    assert by_name[VALIDATED]["resource"]["prefect.resource.id"] == "gauntlet.validator.vali"
    assert by_name[VALIDATED]["payload"]["verdicts"] == {"copied": 1, "infrastructure": 1, "ok": 2}
    assert by_name[WEIGHTS_SET]["payload"]["block"] == 70
    assert by_name[PEER_BANNED]["resource"]["prefect.resource.id"] == "gauntlet.peer.2"
    assert by_name[VALIDATOR_FAULT]["payload"]["details"] == {"3": "bucket answered 503"}
