"""The audit rows of one window (tables of gauntlet/audit/schema.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gauntlet import __version__
from gauntlet.config import GauntletConfig
from gauntlet.ratings import PeerRecord, ValidatorState
from gauntlet.scoring import PeerLosses
from gauntlet.verdicts import Verdict
from gauntlet.window.checks import FilterResult
from gauntlet.window.evaluate import Evaluation
from gauntlet.window.fetch import FetchRecord
from gauntlet.window.plan import WindowPlan


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def submission_rows(window: int, records: list[FetchRecord]) -> list[dict]:
    return [{"window_id": window, "uid": r.uid, "key": r.key, "size": r.size,
             "last_modified": _ts(r.last_modified), "content_hash": r.content_hash,
             "archived_path": r.path} for r in records]


def verdict_rows(window: int, verdicts: dict[int, Verdict]) -> list[dict]:
    return [{"window_id": window, **verdicts[u].row()} for u in sorted(verdicts)]


def score_rows(window: int, filtered: FilterResult, evaluation: Evaluation, state: ValidatorState) -> list[dict]:
    """One row per peer whose file parsed: sync always, losses when it was evaluated."""
    rows = []
    for uid in sorted(filtered.steps):
        losses: PeerLosses | None = evaluation.losses.get(uid)
        score = evaluation.scores.get(uid)
        copy = filtered.copies.get(uid)
        rows.append({
            "window_id": window, "uid": uid,
            "loss_own_before": losses.own_before if losses else None,
            "loss_own_after": losses.own_after if losses else None,
            "loss_rand_before": losses.rand_before if losses else None,
            "loss_rand_after": losses.rand_after if losses else None,
            "gradient_score": score.gradient_score if score else None,
            "own_improvement": score.own_improvement if score else None,
            "indicator": score.indicator if score else None,
            "moving_average": state.peers[uid].moving_average if uid in state.peers else None,
            "sync_score": filtered.sync.get(uid), "steps_behind": filtered.steps.get(uid),
            "max_overlap": copy.overlap if copy else None, "overlap_with": copy.partner if copy else None,
        })
    return rows


def weight_rows(window: int, weights: dict[int, float], chain_result: dict | None) -> list[dict]:
    set_ = chain_result is not None
    return [{"window_id": window, "uid": u, "weight": w, "set_on_chain": set_,
             "set_at_block": chain_result.get("block") if set_ else None,
             "chain_success": chain_result.get("success") if set_ else None,
             "chain_message": chain_result.get("message") if set_ else None}
            for u, w in sorted(weights.items())]


def window_row(plan: WindowPlan, cfg: GauntletConfig, *, before: str, after: str, hotkey: str | None,
               gather: list[int], state: ValidatorState, timings: dict[str, float]) -> dict:
    return {
        "window_id": plan.window, "first_block": plan.first_block, "last_block": plan.last_block,
        "t_min": plan.t_min, "t_max": plan.t_max, "block_hash": plan.block_hash, "seed": plan.seed,
        "config_json": cfg.to_json(), "checkpoint_before": before, "checkpoint_after": after,
        "validator_version": __version__, "validator_hotkey": hotkey, "gather_uids": gather,
        "gather_schedule_json": json.dumps([[e, list(u)] for e, u in state.gather_schedule]),
        "plan_json": json.dumps(plan.to_dict()),
        "lr": plan.lr, "timings_json": json.dumps(timings), "created_at": datetime.now(UTC),
    }


def rating_rows(window: int, records: list[PeerRecord]) -> list[dict]:
    return [r.row(window) for r in records]
