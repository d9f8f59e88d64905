"""Prefect events for each validated window, so automations and the UI's event feed can react.

Events (resource `gauntlet.validator.<hotkey>`, label `gauntlet.window`):
- `gauntlet.window.validated`: every window; counts of verdicts by reason, evaluated and gathered peers;
- `gauntlet.weights.set` / `gauntlet.weights.failed`: when weights were due, with the chain's answer;
- `gauntlet.peer.banned`: one per peer banned for copying this window (resource `gauntlet.peer.<uid>`);
- `gauntlet.validator.fault`: when some verdicts blame the validator or the infrastructure.

The function takes plain data (verdict rows, weights, the chain's answer) rather than the flow's
objects, so the flow calls it in one line and a test can feed it without running a window.
Emitting never fails a window: `emit_event` queues the event and returns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prefect.events import Event, emit_event

VALIDATED = "gauntlet.window.validated"
WEIGHTS_SET = "gauntlet.weights.set"
WEIGHTS_FAILED = "gauntlet.weights.failed"
PEER_BANNED = "gauntlet.peer.banned"
VALIDATOR_FAULT = "gauntlet.validator.fault"
FAULT_BLAME = ("validator", "infrastructure")
"""Verdict blames that are the validator's own problem, not the peer's."""


def validator_resource(hotkey: str, window: int) -> dict[str, str]:
    return {"prefect.resource.id": f"gauntlet.validator.{hotkey}", "prefect.resource.name": hotkey,
            "gauntlet.window": str(window)}


def window_events(window: int, verdict_rows: Iterable[Mapping[str, Any]], weights: Mapping[int, float],
                  chain_result: Mapping[str, Any] | None, copy_actions: Mapping[int, str] | None = None,
                  gather: Sequence[int] = ()) -> list[tuple[str, dict[str, Any], int | None]]:
    """(event name, payload, peer uid or None) for a window, in emission order."""
    rows = list(verdict_rows)
    reasons = Counter(str(r["reason"]) for r in rows)
    positive = {int(u): float(w) for u, w in weights.items() if w > 0}
    out: list[tuple[str, dict[str, Any], int | None]] = [(VALIDATED, {
        "window": window, "peers": len(rows), "ok": reasons.get("ok", 0), "verdicts": dict(sorted(reasons.items())),
        "weighted_peers": len(positive), "gather": sorted(int(u) for u in gather)}, None)]
    if chain_result is not None:
        name = WEIGHTS_SET if chain_result.get("success") else WEIGHTS_FAILED
        out.append((name, {"window": window, "success": bool(chain_result.get("success")),
                           "message": str(chain_result.get("message", "")), "block": chain_result.get("block"),
                           "uids": sorted(positive), "count": len(positive)}, None))
    for uid, action in sorted((copy_actions or {}).items()):
        if action == "ban":
            out.append((PEER_BANNED, {"window": window, "uid": int(uid), "action": action}, int(uid)))
    faults = [r for r in rows if str(r.get("blame")) in FAULT_BLAME]
    if faults:
        out.append((VALIDATOR_FAULT, {
            "window": window, "count": len(faults), "uids": sorted(int(r["uid"]) for r in faults),
            "reasons": dict(sorted(Counter(str(r["reason"]) for r in faults).items())),
            "details": {str(r["uid"]): str(r.get("detail", "")) for r in faults}}, None))
    return out


def emit_window_events(window: int, verdict_rows: Iterable[Mapping[str, Any]], weights: Mapping[int, float],
                       chain_result: Mapping[str, Any] | None, copy_actions: Mapping[int, str] | None = None,
                       gather: Sequence[int] = (), hotkey: str = "validator") -> list[Event]:
    """Emit the window's events; returns those Prefect accepted (none when events are off).

    `verdict_rows`: `Verdict.row()` dicts (uid, reason, detail, stage, blame); `weights`: uid ->
    weight; `chain_result`: the set-weights answer (`success`, `message`, `block`) or None when
    weights were not due; `copy_actions`: uid -> "halve" | "reset" | "identical" | "ban".
    """
    emitted = []
    for name, payload, uid in window_events(window, verdict_rows, weights, chain_result, copy_actions, gather):
        validator = validator_resource(hotkey, window)
        if uid is None:
            resource, related = validator, []
        else:
            resource = {"prefect.resource.id": f"gauntlet.peer.{uid}", "gauntlet.window": str(window)}
            related = [{**validator, "prefect.resource.role": "validator"}]
        event = emit_event(name, resource=resource, related=related, payload=payload)
        if event is not None:
            emitted.append(event)
    return emitted
