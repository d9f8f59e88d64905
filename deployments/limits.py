"""Server-side limits the deployments rely on, created idempotently before anything is served.

Global concurrency limits must exist on the server before a flow can take a slot (Prefect 3
skips a missing limit with a warning), so `serve_all` and `python -m deployments.automations`
create them; running either again only updates the limit. With a config whose
`storage.reads_per_second` is set, the bucket-read rate limit (`tasks.limits.BUCKET_READS`, a
limit whose slots decay at that rate) is created too.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client

from gauntlet.config import GauntletConfig
from tasks.limits import BUCKET_READS, WINDOW_LOCK, read_limit

LIMITS: dict[str, int] = {WINDOW_LOCK: 1}
"""Name -> slots: one window validated at a time across every deployment."""


def ensure_limits(limits: dict[str, int] | None = None, cfg: GauntletConfig | None = None) -> dict[str, int]:
    """Create or update each global concurrency limit (and, given `cfg`, the bucket-read rate
    limit); returns the slots the server now holds for each."""
    plain = LIMITS if limits is None else limits
    wanted: dict[str, tuple[int, float | None]] = {name: (slots, None) for name, slots in plain.items()}
    rate = None if cfg is None else read_limit(cfg)
    if rate is not None:
        wanted[BUCKET_READS] = rate
    with get_client(sync_client=True) as client:
        for name, (slots, decay) in wanted.items():
            client.upsert_global_concurrency_limit_by_name(name, slots, slot_decay_per_second=decay)
        return {name: client.read_global_concurrency_limit_by_name(name).limit for name in wanted}
