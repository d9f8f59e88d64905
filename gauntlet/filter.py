"""Stage 1, the fast filter: timing against the put window and the sync probe.

No forward passes: these checks cost microseconds per peer, so they run for every peer that
should have submitted. The file format itself is checked by `gauntlet.submission`.

Timing is judged by the object store's LastModified, not by anything the peer writes, because a
peer can put any time it likes in its own metadata.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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

    Times are unix seconds (or timezone-aware datetimes for `last_modified`).
    """
    if not t_min <= t_max:
        raise ValueError(f"put window is empty: t_min {t_min} > t_max {t_max}")
    if last_modified is None:
        return Verdict(uid, Reason.MISSING, "no file for this window", stage="filter")
    t = _seconds(last_modified)
    if t < t_min:
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


def steps_behind(validator_probe: Mapping[str, Sequence[float]], peer_probe: Mapping[str, Sequence[float]],
                 lr: float) -> float:
    """x = mean |theta_validator - theta_peer| / lr over every probe element: steps behind.

    A sign-SGD step moves each parameter by exactly lr, so a peer k steps out of date differs by
    about k * lr per element.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if set(validator_probe) != set(peer_probe):
        ours, theirs = sorted(set(validator_probe) - set(peer_probe)), sorted(set(peer_probe) - set(validator_probe))
        raise ValueError(f"probes name different tensors: only the validator's {ours[:3]}, only the peer's {theirs[:3]}")
    diffs: list[float] = []
    for name, ours in validator_probe.items():
        theirs = peer_probe[name]
        if len(ours) != len(theirs):
            raise ValueError(f"probe of {name}: {len(ours)} validator values vs {len(theirs)} from the peer")
        diffs.extend(abs(a - b) for a, b in zip(ours, theirs))
    if not diffs:
        raise ValueError("probes hold no values")
    return math.fsum(diffs) / len(diffs) / lr


def sync_score(x: float, cap: float = 5.0, exponent: float = 2.5) -> float:
    """(1 - min(x, cap)/cap) ** exponent: 1 in sync, 0 at `cap` steps behind or more."""
    if not x >= 0 or cap <= 0:
        raise ValueError(f"need x >= 0 and cap > 0, got x={x}, cap={cap}")
    return (1.0 - min(x, cap) / cap) ** exponent


def sync_verdict(uid: int, x: float, max_steps: float) -> Verdict:
    """DESYNCED when strictly more than `max_steps` behind; exactly `max_steps` passes."""
    if not x >= 0:
        raise ValueError(f"steps behind must be >= 0, got {x}")
    if x > max_steps:
        return Verdict(uid, Reason.DESYNCED, f"{x:.1f} steps behind the validator (limit {max_steps:g})", stage="sync")
    return Verdict.accept(uid, f"{x:.1f} steps behind the validator", stage="sync")
