"""Stage "audit": the rows of one window (tables of gauntlet/audit/schema.py), written at once.

One immutable Parquet file per table per window, the `windows` row last (the store's rule), so a
window is in the tables completely or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from gauntlet import __version__
from gauntlet.audit.store import AuditStore
from gauntlet.chain import WeightsResult
from gauntlet.config import GauntletConfig
from gauntlet.ratings import ValidatorState, update_moving_average
from gauntlet.scoring import PeerLosses
from gauntlet.storage import redact_commitment
from gauntlet.verdicts import Reason, Verdict
from gauntlet.window.evaluate import Evaluated
from gauntlet.window.fetch import FetchRecord, Fetched
from gauntlet.window.filter import Filtered
from gauntlet.window.plan import WindowPlan
from gauntlet.window.publish import Published
from gauntlet.window.rate import Rated
from gauntlet.window.step import Stepped


@dataclass(frozen=True)
class WindowResult:
    """Every stage's result for one window: what the audit rows are made of."""

    plan: WindowPlan
    fetched: Fetched
    filtered: Filtered
    evaluated: Evaluated
    rated: Rated
    stepped: Stepped
    weights: WeightsResult | None = None
    published: Published | None = None

    @property
    def state(self) -> ValidatorState:
        """The state the next window starts from (what `restore` rebuilds from the tables)."""
        return replace(self.rated.state, sync_ema=self.stepped.sync_ema)


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def submission_rows(window: int, records: tuple[FetchRecord, ...]) -> list[dict]:
    return [{"window_id": window, "uid": r.uid, "key": r.key, "size": r.size,
             "last_modified": _ts(r.last_modified), "content_hash": r.content_hash,
             "archived_path": r.path, "time_trusted": r.time_trusted, "provider": r.provider} for r in records]


def verdict_rows(window: int, verdicts: Mapping[int, Verdict]) -> list[dict]:
    return [{"window_id": window, **verdicts[u].row()} for u in sorted(verdicts)]


def score_rows(window: int, filtered: Filtered, evaluated: Evaluated, rated: Rated, ema: float) -> list[dict]:
    """One row per peer whose file parsed: sync always, losses and B's update when evaluated,
    the closest top-k overlap with another peer whenever copies were checked, and (screening on)
    the estimate of s_k and whether the peer was scored exactly or left screened."""
    rows = []
    before = {r.state.uid: r.before for r in rated.records}
    for uid in sorted(filtered.steps):
        losses: PeerLosses | None = evaluated.losses.get(uid)
        score = evaluated.scores.get(uid)
        closest = filtered.closest.get(uid)
        test = evaluated.own_tests.get(uid)
        updated = (update_moving_average(before[uid].moving_average, score.indicator, ema)
                   if score is not None and score.indicator is not None and uid in before else None)
        rows.append({
            "window_id": window, "uid": uid,
            "loss_own_before": losses.own_before if losses else None,
            "loss_own_after": losses.own_after if losses else None,
            "loss_rand_before": losses.rand_before if losses else None,
            "loss_rand_after": losses.rand_after if losses else None,
            "gradient_score": score.gradient_score if score else None,
            "own_improvement": score.own_improvement if score else None,
            "indicator": score.indicator if score else None,
            "moving_average": updated,
            "sync_score": filtered.sync.get(uid), "steps_behind": filtered.steps.get(uid),
            "max_overlap": closest[1] if closest else None, "overlap_with": closest[0] if closest else None,
            "own_batches": test.own_batches if test else None,
            "own_difference": test.difference if test else None,
            "own_std_error": test.std_error if test else None,
            "score_estimate": evaluated.estimates.get(uid),
            "scored_exactly": None if score is None else uid in evaluated.losses,
        })
    return rows


def weight_rows(window: int, weights: Mapping[int, float], result: WeightsResult | None) -> list[dict]:
    set_ = result is not None
    return [{"window_id": window, "uid": u, "weight": w, "set_on_chain": set_,
             "set_at_block": result.block if set_ else None,
             "chain_success": result.success if set_ else None,
             "chain_message": result.message if set_ else None}
            for u, w in sorted(weights.items())]


def _redacted(plan: WindowPlan) -> dict:
    """The plan as stored: commitments carry the peers' read keys, which never go to disk."""
    out = plan.to_dict()
    out["commitments"] = {uid: redact_commitment(text) for uid, text in plan.commitments.items()}
    return out


def window_row(cfg: GauntletConfig, result: WindowResult, timings: Mapping[str, float]) -> dict:
    plan, stepped, state = result.plan, result.stepped, result.rated.state
    return {
        "window_id": plan.window, "first_block": plan.first_block, "last_block": plan.last_block,
        "t_min": plan.t_min, "t_max": plan.t_max, "block_hash": plan.block_hash, "seed": plan.seed,
        "config_json": cfg.to_json(), "checkpoint_before": stepped.checkpoint_before,
        "checkpoint_after": stepped.checkpoint_after,
        "validator_version": __version__, "validator_hotkey": cfg.validator.hotkey, "gather_uids": list(stepped.gather),
        "gather_schedule_json": json.dumps([[e, list(u)] for e, u in state.gather_schedule]),
        "plan_json": json.dumps(_redacted(plan)),
        "lr": plan.lr, "timings_json": json.dumps(dict(timings)), "created_at": datetime.now(UTC),
        "internal_errors": sum(v.reason is Reason.INTERNAL_ERROR for v in result.rated.verdicts.values()),
        "sync_ema_json": stepped.sync_ema or None,
        "anchor_mu": state.anchor[0] if state.anchor else None,
        "anchor_sigma": state.anchor[1] if state.anchor else None,
    }


def rating_rows(window: int, rated: Rated) -> list[dict]:
    rows = [r.row(window) for r in rated.records]
    for row in rows:
        if row["uid"] in rated.first_seen:  # no state before: the priors are not a "before"
            row.update(mu_before=None, sigma_before=None, final_score_before=None)
    return rows


def tables(cfg: GauntletConfig, result: WindowResult, timings: Mapping[str, float]) -> dict[str, list[dict]]:
    w = result.plan.window
    return {
        "submissions": submission_rows(w, result.fetched.records),
        "verdicts": verdict_rows(w, result.rated.verdicts),
        "scores": score_rows(w, result.filtered, result.evaluated, result.rated, cfg.uniqueness.ema),
        "ratings": rating_rows(w, result.rated),
        "weights": weight_rows(w, result.rated.weights, result.weights),
        "windows": [window_row(cfg, result, timings)],
    }


def run(cfg: GauntletConfig, result: WindowResult, timings: Mapping[str, float], overwrite: bool = False) -> list[str]:
    """Stage "audit": write the window's rows; returns the files written."""
    written = AuditStore(cfg.audit.root).write_window(result.plan.window, tables(cfg, result, timings),
                                                      overwrite=overwrite)
    return [str(p) for p in written.values()]
