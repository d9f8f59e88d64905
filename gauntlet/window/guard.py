"""The per-peer guard: one peer's data can give that peer a verdict, never a failed window.

Every step that handles one peer's bytes (checking its file, decoding and scoring its update)
runs inside ``guarded``. The checks themselves turn every *expected* problem into a typed verdict
with a reason; the guard is the boundary for the unexpected: an exception raised while handling
a peer's data becomes a verdict `internal_error` for that peer, its traceback is logged, and the
window goes on with every other peer's result unchanged. Work per peer is bounded before it gets
here (the fetch reads at most `filter.max_file_mb` within `filter.fetch_timeout_s`; parsing is
linear in the file's size), so the guard needs no timer of its own.

Who is blamed (the rule, also in the README's threat model): an internal error is the
validator's fault (blame `validator`), so the peer's score and moving average are not cut (no
honest peer is penalised for our bug); but nothing that was not verified is paid either: the
peer is left out of the match and the aggregate, and the window counts towards its inactivity
clock, so a peer that keeps triggering the same bug loses its rating after `penalty.reset_after`
windows instead of living on a stale score (no free pass to repeat it). Each internal error is
counted in the window's audit row (`windows.internal_errors`) for the operator's alerts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from gauntlet.verdicts import Reason, Verdict

log = logging.getLogger("gauntlet.guard")
T = TypeVar("T")

GUARDED_ERRORS = (Exception,)
"""What the guard turns into a verdict: any ordinary exception. KeyboardInterrupt, SystemExit and
MemoryError of the whole process are not one peer's verdict and still stop the window."""


def guarded(uid: int, stage: str, fn: Callable[..., T], *args: object) -> T | Verdict:
    """`fn(*args)`, or an `internal_error` verdict for `uid` if it raises unexpectedly."""
    try:
        return fn(*args)
    except MemoryError:
        raise
    except GUARDED_ERRORS as exc:
        log.exception("internal error in stage %s while handling uid %s", stage, uid)
        return Verdict.internal_error(uid, stage, exc)
