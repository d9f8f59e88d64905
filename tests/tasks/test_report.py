"""The Prefect UI's per-window table of peers."""

from __future__ import annotations

from gauntlet.config import load_config
from gauntlet.ratings import PeerScore, ValidatorState, WindowOutcome, advance
from gauntlet.scoring import PeerLosses
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.audit import WindowResult
from gauntlet.window.evaluate import Evaluated
from gauntlet.window.rate import Rated
from tasks.report import peer_table


def test_peer_table_has_one_row_per_peer_with_its_verdict_and_weight():
    cfg = load_config()
    verdicts = {1: Verdict.accept(1), 2: Verdict.accept(2), 3: Verdict(3, Reason.TOO_LATE, "uploaded 2.0 s late")}
    scores = {1: PeerScore(0.02, 0.05, 1), 2: PeerScore(0.01, 0.0, -1)}
    state, records = advance(ValidatorState(), WindowOutcome(0, verdicts, scores, {1: 1.0, 2: 1.0}), cfg)
    evaluated = Evaluated({u: PeerLosses(u, 2.0, 1.9, 2.0, 1.96) for u in scores}, scores)
    rated = Rated(state, records, {1: 1.0, 2: 0.0, 3: 0.0}, verdicts)
    rows = peer_table(WindowResult(None, None, None, evaluated, rated, None))
    assert [r["uid"] for r in rows] == [1, 2, 3]
    assert rows[0]["verdict"] == "ok" and rows[0]["b"] == 1 and rows[0]["weight"] == 1.0
    assert rows[2]["verdict"] == "too_late" and rows[2]["s_k"] is None and "late" in rows[2]["detail"]
