"""Synthetic audit windows shared by the audit tests.

Five peers with the stories a validator really tells: uid 1 and 2 honest, uid 3 uploaded late,
uid 4 copied uid 1 (top-k overlap 0.82, uploaded after it), uid 5 never uploaded.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from gauntlet.config import GauntletConfig

HONEST, HONEST_2, LATE, COPYCAT, MISSING = 1, 2, 3, 4, 5
UIDS = (HONEST, HONEST_2, LATE, COPYCAT, MISSING)
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def put_window(window: int) -> tuple[float, float]:
    t_min = T0 + 96.0 * window
    return t_min, t_min + 10.0


def _upload_time(window: int, uid: int) -> float | None:
    t_min, t_max = put_window(window)
    return {HONEST: t_min + 2.0, HONEST_2: t_min + 4.5, LATE: t_max + 3.2, COPYCAT: t_min + 6.0}.get(uid)


def _verdict(window: int, uid: int) -> dict[str, Any]:
    t_min, t_max = put_window(window)
    if uid == LATE:
        return {"stage": "filter", "reason": "too_late", "blame": "peer",
                "detail": f"uploaded 3.2 s after the put window closed at {datetime.fromtimestamp(t_max, UTC).isoformat()}"}
    if uid == MISSING:
        return {"stage": "filter", "reason": "missing", "blame": "peer", "detail": "no file for this window"}
    if uid == COPYCAT:
        return {"stage": "copy", "reason": "copied", "blame": "peer",
                "detail": f"top-k overlap 0.82 with uid {HONEST}, which uploaded 4.0 s earlier"}
    offset = _upload_time(window, uid) - t_min
    return {"stage": "filter", "reason": "ok", "blame": "none", "detail": f"uploaded {offset:.1f} s into the put window"}


def _score(window: int, uid: int) -> dict[str, Any] | None:
    if uid in (LATE, MISSING):
        return None
    own_b, rand_b = 4.0 - 0.001 * window, 4.1 - 0.001 * window
    own_gain, rand_gain = (0.04, 0.02) if uid != COPYCAT else (0.01, 0.02)
    r_own, s_k = own_gain / own_b, rand_gain / rand_b
    b = 1 if r_own > s_k else -1
    return {"loss_own_before": own_b, "loss_own_after": own_b - own_gain, "loss_rand_before": rand_b,
            "loss_rand_after": rand_b - rand_gain, "gradient_score": s_k, "own_improvement": r_own,
            "indicator": b, "moving_average": 0.05 * b * (window + 1) ** 0.5 / 4, "sync_score": 1.0,
            "steps_behind": 0.0, "max_overlap": 0.82 if uid in (HONEST, COPYCAT) else 0.12,
            "overlap_with": {HONEST: COPYCAT, COPYCAT: HONEST}.get(uid, HONEST),
            "own_batches": None, "own_difference": None, "own_std_error": None,  # the margin rule
            "score_estimate": None, "scored_exactly": True}  # screening is off in this config


def _rating(window: int, uid: int, score: dict[str, Any] | None) -> dict[str, Any]:
    mu_before = 25.0 + 0.3 * window * (1 if uid in (HONEST, HONEST_2) else -1)
    mu = mu_before + (0.3 if uid in (HONEST, HONEST_2) else -0.3 if score else 0.0)
    sigma_before = max(8.333 - 0.1 * window, 2.0)
    sigma = max(sigma_before - 0.1, 2.0) if score else sigma_before
    b_avg = score["moving_average"] if score else 0.0
    final = max(0.0, (mu - 3 * sigma) * max(0.0, b_avg)) if uid in (HONEST, HONEST_2) else 0.0
    penalties = {LATE: ["missing x0.75"], MISSING: ["missing x0.75"], COPYCAT: ["copied: reset, banned 200"]}
    return {"uid": uid, "mu": mu, "sigma": sigma, "ordinal": mu - 3 * sigma, "moving_average": b_avg,
            "sync_score": 1.0, "final_score": final, "penalties": penalties.get(uid, []),
            "inactive_windows": window + 1 if uid == MISSING else 0,
            "last_evaluated_window": window if score else None,
            "banned_until": window + 200 if uid == COPYCAT else None, "rated_in_match": score is not None,
            "mu_before": mu_before, "sigma_before": sigma_before, "final_score_before": final * 0.9,
            "miss_history": [], "consecutive_misses": 0, "negative_history": [], "consecutive_negatives": 0,
            "rules_fired": []}


def synthetic_window(window: int, *, lr: float = 4e-4) -> dict[str, list[dict[str, Any]]]:
    """All six tables of one window, as the window flow would hand them to `write_window`."""
    t_min, t_max = put_window(window)
    key = f"gauntlet/v1/gradients/{window:08d}/{{uid}}.safetensors"
    submissions, verdicts, scores, ratings = [], [], [], []
    for uid in UIDS:
        up = _upload_time(window, uid)
        submissions.append({"uid": uid, "key": key.format(uid=uid), "size": None if up is None else 1_200_000 + uid,
                            "last_modified": None if up is None else datetime.fromtimestamp(up, UTC),
                            "content_hash": None if up is None else sha(f"{window}/{uid}"),
                            "archived_path": None if up is None else f"archive/{window}/{uid}.safetensors",
                            "time_trusted": up is not None, "provider": None})
        verdicts.append({"uid": uid, **_verdict(window, uid)})
        score = _score(window, uid)
        if score is not None:
            scores.append({"uid": uid, **score})
        ratings.append(_rating(window, uid, score))
    finals = {r["uid"]: r["final_score"] for r in ratings}
    total = sum(f**2 for f in finals.values() if f > 0)
    due = window % 2 == 0
    weights = [{"uid": u, "weight": (f**2 / total if total > 1e-8 and f > 0 else 0.0), "set_on_chain": due,
                "set_at_block": 8 * window + 17 if due else None, "chain_success": True if due else None,
                "chain_message": "ok" if due else None} for u, f in finals.items()]
    windows = [{"first_block": 8 * window, "last_block": 8 * window + 7, "t_min": t_min, "t_max": t_max,
                "block_hash": "0x" + sha(f"block{window}"), "seed": 1000 + window,
                "config_json": GauntletConfig().to_json(), "checkpoint_before": sha(f"ckpt{window}"),
                "checkpoint_after": sha(f"ckpt{window + 1}"), "validator_version": "0.1.0",
                "validator_hotkey": "5Validator", "gather_uids": [HONEST, HONEST_2],
                "gather_schedule_json": json.dumps([[window, [HONEST, HONEST_2]]]),
                "plan_json": json.dumps({"window": window}), "lr": lr,
                "timings_json": json.dumps({"fetch": 0.5, "score": 2.0}), "created_at": datetime.now(UTC), "internal_errors": 0,
                "sync_ema_json": None, "anchor_mu": None, "anchor_sigma": None}]
    return {"windows": windows, "submissions": submissions, "verdicts": verdicts, "scores": scores,
            "ratings": ratings, "weights": weights}
