"""Typed verdicts: every peer that should have submitted gets exactly one per window.

A rejection is a row, never an exception: hostile or broken files become verdicts with a reason
and a human-readable detail. Faults of the validator or of the infrastructure are recorded with
their blame and never penalise the peer (ours; the reference punished peers for them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum


class Reason(StrEnum):
    OK = "ok"
    MISSING = "missing"
    TOO_EARLY = "too_early"
    TOO_LATE = "too_late"
    UNTRUSTED_TIME = "untrusted_time"
    """The upload time came only from the peer's own server (not a `storage.trusted_time_hosts` store)."""
    MALFORMED = "malformed"
    EQUIVOCATED = "equivocated"
    """Two reads of the peer's file gave different bytes: it serves different files to different
    readers, which would split the network (window/fetch.py `_reread`). Penalised like an invalid file."""
    NON_FINITE = "non_finite"
    DESYNCED = "desynced"
    COPIED = "copied"
    BANNED = "banned"
    VALIDATOR_FAULT = "validator_fault"
    INFRASTRUCTURE = "infrastructure"
    INTERNAL_ERROR = "internal_error"
    """An unexpected exception while handling the peer's data (window/guard.py)."""


class Blame(StrEnum):
    NONE = "none"
    PEER = "peer"
    VALIDATOR = "validator"
    INFRASTRUCTURE = "infrastructure"


# Reasons that mean the file itself is bad (an evaluated peer with one gets F = 0).
INVALID_FILE = frozenset({Reason.MALFORMED, Reason.NON_FINITE, Reason.EQUIVOCATED})

MAX_DETAIL = 300
"""Characters of a verdict's detail kept: enough to name the fault, not a peer's payload."""


def clean_detail(text: str, limit: int = MAX_DETAIL) -> str:
    """`text` cut to `limit` characters with non-printable ones escaped (a newline becomes `\\n`).

    Details often quote what a peer wrote; cut first so a huge detail costs nothing, then escape
    so control characters, bidi overrides and lone surrogates never reach logs or audit files.
    """
    cut = text[:limit]
    if not cut.isprintable():
        cut = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in cut)
    if len(text) > limit or len(cut) > limit:
        cut = cut[:limit - 3] + "..."
    return cut


@dataclass(frozen=True, slots=True)
class Verdict:
    uid: int
    reason: Reason
    detail: str = ""
    stage: str = "filter"
    """`fetch`, `filter`, `sync`, `copy` or `score`: where the decision was taken."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", clean_detail(str(self.detail)))

    @property
    def ok(self) -> bool:
        return self.reason is Reason.OK

    @property
    def blame(self) -> Blame:
        if self.reason is Reason.OK:
            return Blame.NONE
        if self.reason in (Reason.VALIDATOR_FAULT, Reason.INTERNAL_ERROR):
            return Blame.VALIDATOR
        if self.reason is Reason.INFRASTRUCTURE:
            return Blame.INFRASTRUCTURE
        return Blame.PEER

    def row(self) -> dict[str, object]:
        out = asdict(self)
        out["reason"] = str(self.reason)
        out["blame"] = str(self.blame)
        return out

    @staticmethod
    def internal_error(uid: int, stage: str, exc: BaseException) -> Verdict:
        """An unexpected exception while handling the peer's data (window/guard.py has the rule).
        The detail names the exception type only: its message may quote the peer's bytes or, for
        a refused endpoint, what answered behind it."""
        return Verdict(uid, Reason.INTERNAL_ERROR, f"internal error in {stage} ({type(exc).__name__}); "
                       "the validator's fault, logged with its traceback", stage=stage)

    @staticmethod
    def accept(uid: int, detail: str = "", stage: str = "filter") -> Verdict:
        return Verdict(uid, Reason.OK, detail, stage)
