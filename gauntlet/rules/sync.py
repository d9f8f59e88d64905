"""Sync as the reference measured it last: steps behind relative to how far each probed value moves.

A sign-SGD step moves every parameter by exactly lr, so the paper divided |theta_v - theta_p| by lr.
With the later optimiser (outer LR 0.4, momentum-free SparseLoCo aggregate) parameters move by
amounts of their own, so the reference divided each probed element's difference by an EMA of that
element's change on the validator's own model, and took the interquartile mean over all elements
(robust to a few odd tensors). Source: one-covenant/templar v2.1.28, `tplr.neurons.
compare_model_with_debug_dict` (IQM, `min_step_size` 1e-9, lr when no EMA yet) and the EMA update in
`Validator.run` (`param_change_alpha` 0.2; the first change seeds the average). The score
`(1 - min(x, 3)/3) ** 2.5` and the limit of 2 steps are `filter.sync_score` with the
`templar-2026` preset's `sync_cap_steps` and `sync_max_steps`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Probe = Mapping[str, Sequence[float]]


@dataclass(frozen=True)
class SyncEma:
    """The validator's own probe after its last step, and the EMA of each element's |change|."""

    previous: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    average: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    def to_json(self) -> str:
        """For an audit column, so a restart rebuilds the EMA (sorted keys: same state, same text)."""
        return json.dumps({"previous": {k: list(v) for k, v in self.previous.items()},
                           "average": {k: list(v) for k, v in self.average.items()}}, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> SyncEma:
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != {"previous", "average"}:
            raise ValueError("sync EMA JSON must be an object with exactly 'previous' and 'average'")
        return SyncEma(*({str(k): tuple(float(x) for x in v) for k, v in data[part].items()}
                         for part in ("previous", "average")))


def update_sync_ema(ema: SyncEma, probe: Probe, alpha: float) -> SyncEma:
    """Fold the validator's probe after its step into the EMA: avg = (1 - alpha) avg + alpha |delta|.

    Call it once per window with the validator's own model after the aggregated step. The reference
    skipped tensors with fewer than 12 elements; pass only the tensors to track.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    average = dict(ema.average)
    for name, values in probe.items():
        before = ema.previous.get(name)
        if before is None:
            continue
        if len(before) != len(values):
            raise ValueError(f"probe of {name} changed length: {len(before)} -> {len(values)}")
        delta = tuple(abs(a - b) for a, b in zip(values, before))
        old = average.get(name)
        average[name] = delta if old is None else tuple((1 - alpha) * o + alpha * d for o, d in zip(old, delta))
    previous = {name: tuple(float(v) for v in values) for name, values in probe.items()}
    return SyncEma(previous, average)


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (torch.quantile's and numpy's default)."""
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def interquartile_mean(values: Sequence[float]) -> float:
    """Mean of the values between the first and third quartiles, both included."""
    if not values:
        raise ValueError("interquartile mean of no values")
    ordered = sorted(values)
    q1, q3 = _quantile(ordered, 0.25), _quantile(ordered, 0.75)
    kept = [v for v in ordered if q1 <= v <= q3]
    return math.fsum(kept) / len(kept)


def steps_behind_iqm(validator_probe: Probe, peer_probe: Probe, ema: SyncEma, lr: float,
                     min_step: float = 1e-9) -> float:
    """x = IQM over every probed element of |theta_v - theta_p| / max(EMA change, min_step).

    Elements of a tensor without an EMA yet (or of another length) are divided by lr instead. A
    tensor the peer did not probe is left out, as the reference did; no common tensor gives inf.
    """
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    ratios: list[float] = []
    for name, ours in validator_probe.items():
        theirs = peer_probe.get(name)
        if theirs is None:
            continue
        if len(theirs) != len(ours):
            raise ValueError(f"probe of {name}: {len(ours)} validator values vs {len(theirs)} from the peer")
        steps = ema.average.get(name)
        if steps is None or len(steps) != len(ours):
            steps = (lr,) * len(ours)
        ratios.extend(abs(a - b) / max(s, min_step) for a, b, s in zip(ours, theirs, steps))
    if not ratios or any(math.isnan(r) for r in ratios):
        return math.inf
    return interquartile_mean(ratios)



MIN_TRACKED_ELEMENTS = 12
"""The reference skipped tensors with fewer elements than this when it tracked parameter changes."""


def ema_of(ema_json: str) -> SyncEma:
    """The EMA stored as `windows.sync_ema_json` ("" before the first step under the rule)."""
    return SyncEma.from_json(ema_json) if ema_json else SyncEma()
