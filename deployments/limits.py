"""Server-side limits the deployments rely on, created idempotently before anything is served.

Global concurrency limits must exist on the server before a flow can take a slot (Prefect 3
skips a missing limit with a warning), so `serve_all` and `python -m deployments.automations`
create them; running either again only updates the limit.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client

from flows.follow import WINDOW_LOCK

LIMITS: dict[str, int] = {WINDOW_LOCK: 1}
"""Name -> slots: one window validated at a time across every deployment."""


def ensure_limits(limits: dict[str, int] | None = None) -> dict[str, int]:
    """Create or update each global concurrency limit; returns what the server now holds."""
    wanted = LIMITS if limits is None else limits
    with get_client(sync_client=True) as client:
        for name, slots in wanted.items():
            client.upsert_global_concurrency_limit_by_name(name, slots)
        return {name: client.read_global_concurrency_limit_by_name(name).limit for name in wanted}
