"""Alerts as code: the automations an unattended validator needs, applied idempotently.

- `gauntlet-window-run-failed`: a `validate-window` or `follow-chain` flow run failed or crashed;
- `gauntlet-window-missing`: no `gauntlet.window.validated` event (see `tasks.events`) within
  `missing_after_windows` windows' time: the validator stopped keeping up, whatever the reason.

Applying twice leaves exactly one automation of each name (updated to the current definition),
so `python -m deployments.automations --config ...` is safe to run on every deploy; it also
creates the global concurrency limits (`deployments.limits`). The action is a notification
through a Prefect notification block when `--notify <block-type>/<block-name>` is given (e.g.
`slack-webhook/ops`); otherwise the automation still fires and shows in the UI's event feed.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from prefect.automations import Automation, AutomationCore, DoNothing, EventTrigger, Posture, SendNotification
from prefect.client.orchestration import get_client

from gauntlet.config import GauntletConfig

FAILED_RUN = "gauntlet-window-run-failed"
MISSING_WINDOW = "gauntlet-window-missing"
WATCHED_FLOWS = ["validate-window", "follow-chain"]
MIN_PROACTIVE_S = 10.0
"""Prefect refuses a proactive trigger's `within` under 10 s."""


def _actions(notify: UUID | None, subject: str, body: str) -> list:
    if notify is None:
        return [DoNothing()]
    return [SendNotification(block_document_id=notify, subject=subject, body=body)]


def definitions(cfg: GauntletConfig, missing_after_windows: int = 2, notify: UUID | None = None) -> list[Automation]:
    """The automations for one validator's config (the window length sets the silence allowed)."""
    if missing_after_windows < 1:
        raise ValueError(f"missing_after_windows must be >= 1, got {missing_after_windows}")
    window_s = cfg.chain.blocks_per_window * cfg.chain.block_time_s
    silence = timedelta(seconds=max(missing_after_windows * window_s, MIN_PROACTIVE_S))
    failed = Automation(
        name=FAILED_RUN, tags=["gauntlet"],
        description="A window's flow run failed or crashed: look at its logs, then rerun the window.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": WATCHED_FLOWS},
            posture=Posture.Reactive, threshold=1, within=timedelta(0)),
        actions=_actions(notify, "gauntlet: a window run failed",
                         "Flow run {{ flow_run.name }} ended {{ flow_run.state.name }}: {{ flow_run.state.message }}"),
    )
    missing = Automation(
        name=MISSING_WINDOW, tags=["gauntlet"],
        description=f"No window validated in {missing_after_windows} windows' time ({silence.total_seconds():.0f} s).",
        trigger=EventTrigger(
            expect={"gauntlet.window.validated"}, match={"prefect.resource.id": "gauntlet.validator.*"},
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1, within=silence),
        actions=_actions(notify, "gauntlet: no window validated",
                         f"No gauntlet.window.validated event in {silence.total_seconds():.0f} s."),
    )
    return [failed, missing]


def apply(automations: list[Automation]) -> list[UUID]:
    """Create each automation, or update the one of that name (removing any duplicates)."""
    ids = []
    with get_client(sync_client=True) as client:
        for automation in automations:
            existing = client.read_automations_by_name(automation.name)
            core = AutomationCore(**automation.model_dump(exclude={"id", "owner_resource"}))
            if not existing:
                ids.append(client.create_automation(core))
                continue
            keep, *extra = existing
            client.update_automation(keep.id, core)
            for duplicate in extra:
                client.delete_automation(duplicate.id)
            ids.append(keep.id)
    return ids


def notification_block(spec: str) -> UUID:
    """`<block-type-slug>/<block-name>` -> the block document's id; a clear error if absent."""
    slug, sep, name = spec.partition("/")
    if not sep or not slug or not name:
        raise ValueError(f"--notify {spec!r}: expected <block-type-slug>/<block-name>, e.g. slack-webhook/ops")
    with get_client(sync_client=True) as client:
        return client.read_block_document_by_name(name, block_type_slug=slug).id


def main(argv: list[str] | None = None) -> int:
    import argparse

    from deployments.limits import ensure_limits
    from flows.follow import light_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    parser.add_argument("--network")
    parser.add_argument("--missing-after-windows", type=int, default=2)
    parser.add_argument("--notify", help="a notification block, <block-type-slug>/<block-name>")
    args = parser.parse_args(argv)
    cfg = light_config(args.config, args.network, None)
    notify = notification_block(args.notify) if args.notify else None
    limits = ensure_limits(cfg=cfg)
    ids = apply(definitions(cfg, args.missing_after_windows, notify))
    print(f"concurrency limits: {limits}; automations: {', '.join(map(str, ids))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
