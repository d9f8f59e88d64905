"""Stage "filter" (stage 1): timing, format, sync and copies -> one verdict per peer.

No forward passes. Everything here depends only on public inputs (the chain's put window, the
files, the model state at the start of the window), so an honest peer in sync computes the same
accepted set as the validator; that is what lets peers aggregate the same update
(``step.aggregation_set``). Bans are the validator's own record and are applied afterwards, so
they never change the aggregate. Each peer's file is checked inside the per-peer guard.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from gauntlet.config import GauntletConfig
from gauntlet.filter import SyncCheck, probe_values, sync_check, sync_score, sync_verdict, timing_verdict
from gauntlet.ratings import PeerState, ValidatorState, is_banned
from gauntlet.rules.sync import ema_of, steps_behind_iqm
from gauntlet.submission import ModelSpec, Submission, parse_submission
from gauntlet.uniqueness import CopyFinding, find_copies, overlap_matrix
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.context import context_for
from gauntlet.window.fetch import FetchRecord, Fetched
from gauntlet.window.guard import guarded
from gauntlet.window.plan import WindowPlan

COPY_REJECTS = ("identical", "reset", "ban")


@dataclass(frozen=True)
class Filtered:
    """Result of stage "filter". No tensors: later stages re-read accepted files from the archive."""

    verdicts: dict[int, Verdict]
    """The window's verdict per expected peer, bans applied."""
    accepted: tuple[int, ...]
    """Peers that passed the public checks (before bans): what every node aggregates from."""
    chosen: tuple[int, ...]
    """Peers chosen for stage 2 (loss scoring)."""
    steps: dict[int, float] = field(default_factory=dict)
    sync: dict[int, float] = field(default_factory=dict)
    copies: dict[int, CopyFinding] = field(default_factory=dict)
    closest: dict[int, tuple[int, float]] = field(default_factory=dict)
    """uid -> (the other peer whose top-k indices overlap its own most, that overlap), for the
    peers compared for copies: how close everyone came to the copy thresholds."""


@dataclass
class _Checked:
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    submissions: dict[int, Submission] = field(default_factory=dict)
    steps: dict[int, float] = field(default_factory=dict)
    sync: dict[int, float] = field(default_factory=dict)
    closest: dict[int, tuple[int, float]] = field(default_factory=dict)


def _sync(uid: int, theta_probe: Mapping[str, list[float]], probe: Mapping[str, list[float]], lr: float,
          cfg: GauntletConfig, sync_ema: str) -> SyncCheck:
    """Steps behind the validator and the sync verdict, for any probe the peer sends: GAUNTLET.md's
    mean |delta| / lr, or the 2026 rule's IQM over an EMA of each parameter's change."""
    f = cfg.filter
    if not cfg.rules.sync_iqm:
        return sync_check(uid, theta_probe, probe, lr, cap=f.sync_cap_steps, exponent=f.sync_exponent,
                          max_steps=f.sync_max_steps)
    x = steps_behind_iqm(theta_probe, probe, ema_of(sync_ema), lr)
    return SyncCheck(sync_verdict(uid, x, f.sync_max_steps), x, sync_score(x, f.sync_cap_steps, f.sync_exponent))


def _check_file(plan: WindowPlan, rec: FetchRecord, spec: ModelSpec, theta_probe: Mapping[str, list[float]],
                cfg: GauntletConfig, out: _Checked, sync_ema: str = "") -> Verdict:
    uid = rec.uid
    if rec.error is not None:
        return Verdict(uid, Reason(rec.error), rec.detail, stage="fetch")
    if not rec.time_trusted:
        return Verdict(uid, Reason.UNTRUSTED_TIME, "its upload time comes only from its own server: store the file "
                       "with a provider on storage.trusted_time_hosts", stage="fetch")
    timing = timing_verdict(uid, rec.last_modified, plan.t_min, plan.t_max)
    if not timing.ok:
        return timing
    parsed = parse_submission(Path(rec.path).read_bytes(), window=plan.window, uid=uid, spec=spec,
                              max_bytes=int(cfg.filter.max_file_mb * 2**20))
    if isinstance(parsed, Verdict):
        return parsed
    sync = _sync(uid, theta_probe, parsed.probe, plan.lr, cfg, sync_ema)
    if sync.steps is not None:
        out.steps[uid], out.sync[uid] = sync.steps, sync.score
    if sync.verdict.ok:
        out.submissions[uid] = parsed
    return sync.verdict


def _check_copies(records: Mapping[int, FetchRecord], cfg: GauntletConfig, out: _Checked) -> dict[int, CopyFinding]:
    subs = out.submissions
    u = cfg.uniqueness
    grads = {uid: s.grads for uid, s in subs.items()}
    matrix = overlap_matrix(grads)
    out.closest = _closest(*matrix)
    copies = find_copies(
        grads, {uid: records[uid].last_modified if records[uid].time_trusted else None for uid in subs},
        {uid: s.content_hash for uid, s in subs.items()},
        halve=u.overlap_halve, reset=u.overlap_reset, ban=u.overlap_ban, matrix=matrix,
    )
    for uid, finding in copies.items():
        if finding.action in COPY_REJECTS:
            detail = (f"{finding.action}: {finding.overlap:.0%} of its top-k indices match uid "
                      f"{finding.partner}, which uploaded first")
            if finding.action == "identical":
                detail = f"identical content to uid {finding.partner}'s file, which was uploaded first"
            out.verdicts[uid] = Verdict(uid, Reason.COPIED, detail, stage="copy")
            del subs[uid]
    return copies


def _closest(uids: list[int], overlap: Tensor) -> dict[int, tuple[int, float]]:
    if len(uids) < 2:
        return {}
    off = overlap.clone().fill_diagonal_(-1.0)
    best = off.argmax(dim=1).tolist()
    return {u: (uids[j], float(off[i, j])) for i, (u, j) in enumerate(zip(uids, best))}


def check_window(plan: WindowPlan, records: list[FetchRecord] | tuple[FetchRecord, ...], spec: ModelSpec,
                 theta: Mapping[str, Tensor], cfg: GauntletConfig,
                 sync_ema: str = "") -> tuple[_Checked, dict[int, CopyFinding]]:
    """Verdicts for every expected peer (the public checks only; no bans). `sync_ema` is the
    2026 sync rule's state (`ValidatorState.sync_ema`), unused unless `rules.sync_iqm`."""
    theta_probe = probe_values(theta, cfg.filter.probe_elements)
    out = _Checked()
    for rec in records:
        out.verdicts[rec.uid] = guarded(rec.uid, "filter", _check_file, plan, rec, spec, theta_probe, cfg, out,
                                          sync_ema)
        if not out.verdicts[rec.uid].ok:  # a guard verdict must not leave half a result behind
            out.submissions.pop(rec.uid, None)
    copies = _check_copies({r.uid: r for r in records}, cfg, out)
    return out, copies


def apply_bans(verdicts: dict[int, Verdict], state: ValidatorState, window: int) -> dict[int, Verdict]:
    """Peers barred for copying get a `banned` verdict instead of being evaluated."""
    out = dict(verdicts)
    for uid, verdict in verdicts.items():
        peer = state.peers.get(uid)
        if verdict.ok and is_banned(peer, window):
            out[uid] = Verdict(uid, Reason.BANNED, f"barred until window {peer.banned_until} (see its ratings row for why)",
                               stage="copy")
    return out


def select_for_evaluation(candidates: list[int], peers: Mapping[int, PeerState], window: int, seed: int,
                          cfg: GauntletConfig) -> list[int]:
    """`all` (ours): every candidate. `sample` (paper): a few, by bins of final score, with
    probability proportional to the windows since each was last evaluated."""
    if cfg.scoring.policy == "all" or len(candidates) <= cfg.scoring.peers_per_window:
        return sorted(candidates)
    rng = random.Random(seed)
    ranked = sorted(candidates, key=lambda u: (-(peers[u].final_score if u in peers else 0.0), u))
    n_bins = min(cfg.scoring.bins, len(ranked))
    bins = [ranked[i::n_bins] for i in range(n_bins)]
    chosen: list[int] = []
    while len(chosen) < cfg.scoring.peers_per_window:
        pool = [u for u in bins[len(chosen) % n_bins] if u not in chosen] or \
               [u for u in ranked if u not in chosen]
        age = [window - (peers[u].last_evaluated_window if u in peers and peers[u].last_evaluated_window
                         is not None else -1) for u in pool]
        chosen.append(rng.choices(pool, weights=age)[0])
    return sorted(chosen)


def run(cfg: GauntletConfig, plan: WindowPlan, fetched: Fetched, state: ValidatorState) -> Filtered:
    """Stage "filter": verdicts (bans applied) and the peers chosen for evaluation."""
    ctx = context_for(cfg)
    with ctx.lock:
        theta = ctx.load_theta(cfg.validator.workdir, plan.window)
        checked, copies = check_window(plan, fetched.records, ctx.spec, theta, cfg, state.sync_ema)
    accepted = tuple(sorted(u for u, v in checked.verdicts.items() if v.ok))
    verdicts = apply_bans(checked.verdicts, state, plan.window)
    candidates = [u for u, v in verdicts.items() if v.ok]
    chosen = select_for_evaluation(candidates, state.peers, plan.window, plan.seed, cfg)
    return Filtered(verdicts, accepted, tuple(chosen), checked.steps, checked.sync, copies, checked.closest)
