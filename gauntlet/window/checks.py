"""Stage 1, the fast filter: timing, format, sync and copies -> one verdict per peer.

No forward passes. Everything here depends only on public inputs (the chain's put window, the
files, the model state at the start of the window), so an honest peer in sync computes the same
accepted set as the validator; that is what lets peers aggregate the same update
(``step.aggregation_set``). Bans are the validator's own record and are applied afterwards, in
``evaluate``, so they never change the aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from gauntlet.filter import probe_values, steps_behind, sync_score, sync_verdict, timing_verdict
from gauntlet.submission import ModelSpec, Submission, parse_submission
from gauntlet.config import GauntletConfig
from gauntlet.uniqueness import CopyFinding, find_copies
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.fetch import FetchRecord
from gauntlet.window.plan import WindowPlan

COPY_REJECTS = ("identical", "reset", "ban")


@dataclass
class FilterResult:
    verdicts: dict[int, Verdict]
    submissions: dict[int, Submission] = field(default_factory=dict)
    steps: dict[int, float] = field(default_factory=dict)
    sync: dict[int, float] = field(default_factory=dict)
    copies: dict[int, CopyFinding] = field(default_factory=dict)

    @property
    def accepted(self) -> list[int]:
        return sorted(u for u, v in self.verdicts.items() if v.ok)


def _check_file(plan: WindowPlan, rec: FetchRecord, spec: ModelSpec, theta_probe: Mapping[str, list[float]],
                cfg: GauntletConfig, result: FilterResult) -> None:
    uid = rec.uid
    if rec.error is not None:
        result.verdicts[uid] = Verdict(uid, Reason(rec.error), rec.detail, stage="fetch")
        return
    timing = timing_verdict(uid, rec.last_modified, plan.t_min, plan.t_max)
    if not timing.ok:
        result.verdicts[uid] = timing
        return
    parsed = parse_submission(Path(rec.path).read_bytes(), window=plan.window, uid=uid, spec=spec,
                              max_bytes=int(cfg.filter.max_file_mb * 2**20))
    if isinstance(parsed, Verdict):
        result.verdicts[uid] = parsed
        return
    x = steps_behind(theta_probe, parsed.probe, plan.lr)
    result.steps[uid] = x
    result.sync[uid] = sync_score(x, cfg.filter.sync_cap_steps, cfg.filter.sync_exponent)
    verdict = sync_verdict(uid, x, cfg.filter.sync_max_steps)
    result.verdicts[uid] = verdict
    if verdict.ok:
        result.submissions[uid] = parsed


def _check_copies(records: Mapping[int, FetchRecord], cfg: GauntletConfig, result: FilterResult) -> None:
    subs = result.submissions
    u = cfg.uniqueness
    result.copies = find_copies(
        {uid: s.grads for uid, s in subs.items()},
        {uid: records[uid].last_modified for uid in subs},
        {uid: s.content_hash for uid, s in subs.items()},
        halve=u.overlap_halve, reset=u.overlap_reset, ban=u.overlap_ban,
    )
    for uid, finding in result.copies.items():
        if finding.action in COPY_REJECTS:
            detail = (f"{finding.action}: {finding.overlap:.0%} of its top-k indices match uid "
                      f"{finding.partner}, which uploaded first")
            if finding.action == "identical":
                detail = f"identical content to uid {finding.partner}'s file, which was uploaded first"
            result.verdicts[uid] = Verdict(uid, Reason.COPIED, detail, stage="copy")
            del subs[uid]


def check_window(plan: WindowPlan, records: list[FetchRecord], spec: ModelSpec,
                 theta: Mapping[str, Tensor], cfg: GauntletConfig) -> FilterResult:
    """Verdicts for every expected peer; accepted submissions parsed and kept."""
    theta_probe = probe_values(theta, cfg.filter.probe_elements)
    result = FilterResult(verdicts={})
    for rec in records:
        _check_file(plan, rec, spec, theta_probe, cfg, result)
    _check_copies({r.uid: r for r in records}, cfg, result)
    return result
