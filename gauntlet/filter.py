"""Stage 1, the fast filter: timing against the put window and the sync probe.

No forward passes: these checks cost microseconds per peer, so they run for every peer that
should have submitted. The file format itself is checked by `gauntlet.submission`.

Timing is judged by the object store's LastModified, not by anything the peer writes, because a
peer can put any time it likes in its own metadata.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import torch
from torch import Tensor

from gauntlet.verdicts import Reason, Verdict


def _seconds(t: datetime | float) -> float:
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError(f"timestamp {t.isoformat()} has no timezone; object stores give aware times")
        return t.timestamp()
    return float(t)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")


def timing_verdict(uid: int, last_modified: datetime | float | None, t_min: float, t_max: float) -> Verdict:
    """MISSING, TOO_EARLY, TOO_LATE or OK; both bounds of `[t_min, t_max]` are inside the window.

    Times are unix seconds (or timezone-aware datetimes for `last_modified`). S3 stores keep
    LastModified in whole seconds, rounded down: a whole-second stamp means the upload happened
    somewhere in `[t, t + 1)`, so it is too early only when `t + 1 <= t_min` (an honest upload in
    the put window's first second is on time; a late one gains nothing).
    """
    if not t_min <= t_max:
        raise ValueError(f"put window is empty: t_min {t_min} > t_max {t_max}")
    if last_modified is None:
        return Verdict(uid, Reason.MISSING, "no file for this window", stage="filter")
    t = _seconds(last_modified)
    early = t + 1.0 <= t_min if float(t).is_integer() else t < t_min
    if early:
        return Verdict(uid, Reason.TOO_EARLY,
                       f"uploaded {t_min - t:.1f} s before the put window opened at {_iso(t_min)}", stage="filter")
    if t > t_max:
        return Verdict(uid, Reason.TOO_LATE,
                       f"uploaded {t - t_max:.1f} s after the put window closed at {_iso(t_max)}", stage="filter")
    return Verdict.accept(uid, f"uploaded {t - t_min:.1f} s into the put window", stage="filter")


def probe_values(params: Mapping[str, Tensor], elements: Sequence[int] = (10, 11)) -> dict[str, list[float]]:
    """Each tensor's values at the given flat positions, as Python floats (one host transfer).

    A tensor with fewer elements than a position asks for is read at its last element instead
    (clamped), so every tensor of any model has a probe and peers and validator agree on it.
    """
    if not params:
        return {}
    if not elements or any(e < 0 for e in elements):
        raise ValueError(f"probe elements must be a non-empty list of non-negative positions, got {elements}")
    picked = []
    for name, p in params.items():
        if p.numel() == 0:
            raise ValueError(f"cannot probe empty tensor {name}")
        pos = torch.tensor([min(e, p.numel() - 1) for e in elements], device=p.device)
        picked.append(p.detach().reshape(-1)[pos].to(torch.float32))
    values = torch.stack(picked).cpu().tolist()  # (n_tensors, n_elements)
    return dict(zip(params, values, strict=True))


def _probe_mismatch(validator_probe: Mapping[str, Sequence[float]], peer_probe: Mapping[str, Sequence[float]]) -> str:
    """Why the two probes cannot be compared element by element, or "" when they can."""
    if set(validator_probe) != set(peer_probe):
        ours = sorted(set(validator_probe) - set(peer_probe))[:3]
        theirs = sorted(set(peer_probe) - set(validator_probe))[:3]
        return f"probes name different tensors: only the validator's {ours}, only the peer's {theirs}"
    for name, ours in validator_probe.items():
        if len(ours) != len(peer_probe[name]):
            return f"probe of {name}: {len(ours)} validator values vs {len(peer_probe[name])} from the peer"
    if not any(len(v) for v in validator_probe.values()):
        return "probes hold no values"
    return ""


def _all_finite(probe: Mapping[str, Sequence[float]]) -> bool:
    return all(math.isfinite(v) for values in probe.values() for v in values)


def steps_behind(validator_probe: Mapping[str, Sequence[float]], peer_probe: Mapping[str, Sequence[float]],
                 lr: float) -> float:
    """x = mean |theta_validator - theta_peer| / lr over every probe element: steps behind.

    A sign-SGD step moves each parameter by exactly lr, so a peer k steps out of date differs by
    about k * lr per element. Finite for any finite probes: differences too large for a float
    (a peer may write 1.7e308 in its file) are averaged at half scale, and x saturates at the
    largest float rather than becoming inf, so nothing downstream sees inf or NaN.
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be > 0 and finite, got {lr}")
    problem = _probe_mismatch(validator_probe, peer_probe)
    if problem:
        raise ValueError(problem)
    if not (_all_finite(validator_probe) and _all_finite(peer_probe)):
        raise ValueError("probe values must be finite")
    pairs = [(a, b) for name, ours in validator_probe.items() for a, b in zip(ours, peer_probe[name])]
    try:
        mean = math.fsum(abs(a - b) for a, b in pairs) / len(pairs)
    except OverflowError:  # the sum of finite differences left the float range
        mean = math.inf
    if not math.isfinite(mean):
        mean = 2.0 * math.fsum(abs(0.5 * a - 0.5 * b) / len(pairs) for a, b in pairs)
    return min(mean / lr, sys.float_info.max)


def sync_score(x: float, cap: float = 5.0, exponent: float = 2.5) -> float:
    """(1 - min(x, cap)/cap) ** exponent: 1 in sync, 0 at `cap` steps behind or more."""
    if not x >= 0 or cap <= 0:
        raise ValueError(f"need x >= 0 and cap > 0, got x={x}, cap={cap}")
    return (1.0 - min(x, cap) / cap) ** exponent


def _steps(x: float) -> str:
    return f"{x:.1f}" if x < 1e6 else f"{x:.3g}"


def sync_verdict(uid: int, x: float, max_steps: float) -> Verdict:
    """DESYNCED when strictly more than `max_steps` behind; exactly `max_steps` passes."""
    if not x >= 0:
        raise ValueError(f"steps behind must be >= 0, got {x}")
    if x > max_steps:
        return Verdict(uid, Reason.DESYNCED, f"{_steps(x)} steps behind the validator (limit {max_steps:g})",
                       stage="sync")
    return Verdict.accept(uid, f"{_steps(x)} steps behind the validator", stage="sync")


@dataclass(frozen=True)
class SyncCheck:
    """The sync stage of one peer: a verdict always; steps and score only when the probes compared."""

    verdict: Verdict
    steps: float | None = None
    score: float | None = None


def sync_check(uid: int, validator_probe: Mapping[str, Sequence[float]], peer_probe: Mapping[str, Sequence[float]],
               lr: float, *, cap: float, exponent: float, max_steps: float) -> SyncCheck:
    """steps_behind, sync_score and sync_verdict together, a verdict for any probe a peer sends.

    A probe that cannot be compared is MALFORMED, one with NaN/Inf is NON_FINITE (both the
    peer's fault); a non-finite probe of the validator's own model is a VALIDATOR_FAULT, never
    held against the peer. When steps and score are given they are finite.
    """
    problem = _probe_mismatch(validator_probe, peer_probe)
    if problem:
        return SyncCheck(Verdict(uid, Reason.MALFORMED, problem, stage="sync"))
    if not _all_finite(peer_probe):
        return SyncCheck(Verdict(uid, Reason.NON_FINITE, "the sync probe holds NaN or Inf", stage="sync"))
    if not _all_finite(validator_probe):
        return SyncCheck(Verdict(uid, Reason.VALIDATOR_FAULT, "the validator's own probe holds NaN or Inf",
                                 stage="sync"))
    x = steps_behind(validator_probe, peer_probe, lr)
    return SyncCheck(sync_verdict(uid, x, max_steps), x, sync_score(x, cap, exponent))
