"""Artifacts in the Prefect UI: a table of peers and a short summary per window."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from gauntlet.window.audit import WindowResult


def peer_table(result: WindowResult) -> list[dict]:
    rows = []
    verdicts, evaluation, rated = result.rated.verdicts, result.evaluated, result.rated
    for rec in rated.records:
        uid = rec.state.uid
        verdict = verdicts.get(uid)
        score = evaluation.scores.get(uid)
        rows.append({
            "uid": uid, "verdict": str(verdict.reason) if verdict else "-",
            "detail": verdict.detail if verdict else "",
            "s_k": None if score is None else round(score.gradient_score, 6),
            "r_own": None if score is None else round(score.own_improvement, 6),
            "b": None if score is None else score.indicator,
            "B": round(rec.state.moving_average, 4), "ordinal": round(rec.state.ordinal, 3),
            "final": round(rec.state.final_score, 5), "weight": round(rated.weights.get(uid, 0.0), 4),
        })
    return rows


@task(task_run_name="report-w{window}", cache_policy=NONE)
def window_artifacts(window: int, result: WindowResult) -> None:
    rows = peer_table(result)
    verdicts, evaluation, rated = result.rated.verdicts, result.evaluated, result.rated
    gather, chain_result = list(result.stepped.gather), result.weights
    create_table_artifact(key=f"window-{window}-peers", table=rows,
                          description=f"Peers of window {window}: verdict, scores, rating, weight")
    reasons: dict[str, int] = {}
    for v in verdicts.values():
        reasons[str(v.reason)] = reasons.get(str(v.reason), 0) + 1
    top = sorted(rated.weights.items(), key=lambda kv: -kv[1])[:5]
    chain = "not due" if chain_result is None else f"{'set' if chain_result.success else 'FAILED'}: {chain_result.message}"
    md = "\n".join([
        f"# Window {window}",
        f"- peers: {len(verdicts)}; verdicts: " + ", ".join(f"{k} {n}" for k, n in sorted(reasons.items())),
        f"- evaluated: {len(evaluation.scores)}; aggregated: {len(gather)} peers {gather}",
        "- top weights: " + ", ".join(f"uid {u} {w:.3f}" for u, w in top if w > 0),
        f"- weights on chain: {chain}",
    ])
    create_markdown_artifact(key=f"window-{window}-summary", markdown=md, description=f"Window {window}")
