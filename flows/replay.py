"""`replay`: recompute recorded windows from their stored inputs, or replay them under another
setting (`overrides=["rating.beta=20"]`) or rule set (`preset="templar-2026"`) and show how the
weights would have differed."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from gauntlet.audit.store import AuditStore
from gauntlet.replay import ReplayReport, render_reports, replay_range
from gauntlet.replay_report import summary


@task(task_run_name="replay-w{first}-w{last}", cache_policy=NONE)
def replay_task(root: str, first: int, last: int, overrides: list[str]) -> list[ReplayReport]:
    return replay_range(AuditStore(root), first, last, overrides)


@flow(name="replay", log_prints=True)
def replay(root: str = "data/localnet/audit", window: int | None = None, first: int | None = None,
           last: int | None = None, overrides: list[str] | None = None, preset: str | None = None) -> dict:
    first = window if window is not None else first
    last = window if window is not None else last
    if first is None or last is None:
        raise ValueError("give window, or first and last")
    overrides = [*([f"preset={preset}"] if preset else []), *(overrides or [])]
    reports = replay_task(root, first, last, overrides)
    text = summary(reports, overrides) + "\n\n" + render_reports(reports, bool(overrides))
    print(text)
    create_markdown_artifact(key=f"replay-{first}-{last}", markdown=f"```\n{text}\n```")
    return {"identical": all(r.identical for r in reports), "windows": [r.window for r in reports]}
