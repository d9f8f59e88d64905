"""`localnet`: a whole network on one machine: miners (honest and hostile) and the validator.

Miners run by the local network's simulation clock; the validator runs `validate-window` for
each window as soon as the chain has reached its validation point, exactly as in production.
After the last miner window the chain runs on (no uploads) until every mined window is
validated, so N windows mined are N windows validated (a resumed network therefore starts with
a window nobody uploaded in: the chain ran on while its miners were stopped). A network already
in the folder is never deleted: it is kept under a dated name (`set_aside`), or continued with
`fresh=False`.
The report (who got paid and why, validation loss, a PNG chart) is printed, written beside the
audit tables and attached to the flow run as a markdown artifact.
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

from flows.validate import with_task_runner
from gauntlet.audit.store import AuditStore
from gauntlet.clock import first_block
from gauntlet.localnet.network import Network, init_network, load_network
from gauntlet.localnet.simulate import MinerReport, run_network
from gauntlet.progress import Progress, next_stage, window_counts
from gauntlet.report import load_report, look_further, render, render_markdown, write_chart
from gauntlet.validation_loss import network_losses

DEMO_OVERRIDES = {"data": {"pages_per_window": 1}}
"""The demo's network trains each peer on one page a window instead of local.toml's two: the
miners' training was most of the demo's time, and every check still catches its hostile peer."""
CHART_NAME = "report.png"
LOG_NAME = "prefect.log"
STARTUP_TIMEOUT_S = 120
"""Prefect's temporary API may start slowly on a busy machine (its default is 20 s)."""
_DISPLAY: list[Progress] = []
"""The progress display the caller installed (`showing`); a deployment run gets a plain one."""


@contextmanager
def showing(progress: Progress) -> Iterator[Progress]:
    """Route the localnet flow's progress to `progress` while the block runs."""
    _DISPLAY.append(progress)
    try:
        yield progress
    finally:
        _DISPLAY.remove(progress)
        progress.close()


def set_aside(folder: Path, now: datetime | None = None) -> Path | None:
    """Move a network folder out of the way under a dated name; None if there is none to keep."""
    folder = Path(folder)
    if not folder.exists() or not any(folder.iterdir()):
        return None
    if not ((folder / "manifest.json").exists() or (folder / "chain.sqlite").exists()):
        raise FileExistsError(f"{folder} is not empty and does not look like a network folder; move it away first")
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M")
    target = folder.with_name(f"{folder.name}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}-{stamp}-{n}")
    shutil.move(str(folder), str(target))
    return target


def prepare_network(folder: Path, peers: int, fresh: bool) -> tuple[Network, Path | None]:
    """The network to run and, when a previous one was set aside, where it went."""
    if not fresh and (folder / "manifest.json").exists():
        return load_network(folder), None
    kept = set_aside(folder) if fresh else None
    return init_network(folder, peers=peers, overrides=DEMO_OVERRIDES), kept


def drain(net: Network, last_mined: int) -> None:
    """Run the chain on, without uploads, until `last_mined` has reached its validation point."""
    c = net.config.chain
    target = first_block(last_mined + c.validator_offset, c.blocks_per_window)
    head = net.chain.block()
    if head < target:
        net.chain.produce_blocks(target - head)


class Validator:
    """`run_network`'s validate callback: validates windows one at a time, in order, in a worker
    thread, so that the miners mine the next window meanwhile (the demo's time was their sum).

    The result is the same as validating inline. Window W is handed over when the chain reaches
    W + validator_offset; while it is validated the miners mine window M = W + validator_offset
    and read M's gather list, which comes from validating windows <= M - validator_offset -
    effective_after = W - effective_after. Each call first waits for the window before it, so
    with effective_after >= 1 all of those are written; with 0 (or `overlap=False`) each window
    is validated inline.
    """

    def __init__(self, net: Network, progress: Progress, overlap: bool = True) -> None:
        self.net, self.progress = net, progress
        self.flow = with_task_runner(net.config)
        self.overlap = overlap and net.config.aggregation.effective_after >= 1
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="validator")
        self.running: Future | None = None

    def one(self, window: int) -> None:
        self.progress.set_stage("validator: restore", window)
        out = self.flow(window=window, network=str(self.net.folder))
        if not out.get("skipped"):
            self.progress.validated(window, *window_counts(self.net.config.audit.root, window))
        self.progress.set_stage("validator: waiting for the next window to close")

    def __call__(self, window: int) -> None:
        self.wait()
        if not self.overlap:
            return self.one(window)
        context = contextvars.copy_context()  # the flow run context: each window is a subflow of this run
        self.running = self.pool.submit(context.run, self.one, window)

    def wait(self) -> None:
        """Block until the window in flight is validated (its exception, if any, is raised here)."""
        running, self.running = self.running, None
        if running is not None:
            running.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.pool.shutdown(wait=True)


def _validate_all(net: Network, windows: int, progress: Progress) -> list[MinerReport]:
    validator = Validator(net, progress)

    def mined(report: MinerReport) -> None:
        progress.set_miners(f"window #{report.window + 1}" if len(reports) + 1 < windows else "done")

    reports: list[MinerReport] = []
    progress.set_miners("starting")
    try:
        reports = run_network(net, windows, validate=validator, on_report=lambda r: (mined(r), reports.append(r)))
        validator.wait()
        if reports:
            drain(net, reports[-1].window)
            done = set(AuditStore(net.config.audit.root).windows())
            for window in range(min(done | {reports[0].window}), reports[-1].window + 1):
                if window not in done:
                    validator.one(window)
    finally:
        validator.close()
    return reports


def finish_report(net: Network, progress: Progress) -> tuple[str, str, Path]:
    """The report as text and markdown, and the chart written beside the audit tables."""
    audit_root = Path(net.config.audit.root)
    report = load_report(audit_root, net.folder)
    progress.set_stage("validation loss")
    report.losses, report.held_out = network_losses(net.config, report.roster, report.windows)
    progress.set_stage("chart")
    chart = write_chart(report, audit_root.parent / CHART_NAME)
    return render(report, chart) + "\n\n" + look_further(audit_root, report), render_markdown(report, chart), chart


@flow(name="localnet", log_prints=True)
def localnet(windows: int = 10, peers: int = 27, network: str = "data/localnet", fresh: bool = True) -> str:
    """Mine and validate `windows` windows; a network already in `network` is kept under a dated
    name when `fresh`, else continued. Returns the report's text."""
    if windows < 1:
        raise ValueError(f"windows must be >= 1, got {windows}")
    progress = _DISPLAY[-1] if _DISPLAY else Progress(windows, live=False)
    net, kept = prepare_network(Path(network), peers, fresh)
    if kept is not None:
        progress.note(f"kept the previous network as {kept} (continue a network instead with `gauntlet demo --resume`)")
    _validate_all(net, windows, progress)
    text, markdown, chart = finish_report(net, progress)
    create_markdown_artifact(key="localnet-report", markdown=markdown,
                             description=f"Who got paid and why; chart at {chart}")
    print(text)
    return text


class StageWatcher(logging.Handler):
    """Reads the validator's progress from Prefect's task-run records: when a stage's task run
    finishes, the next stage of the pipeline is the one at work."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "task_name", None)
        if name and str(record.msg).startswith("Finished in state"):
            following = next_stage(name)
            if following is not None:
                self.progress.set_stage(f"validator: {following}")


@contextmanager
def logs_to_file(path: Path, progress: Progress) -> Iterator[Path]:
    """Prefect's (and every other) log line goes to `path` instead of the terminal, which keeps
    the progress display; the handlers are put back afterwards. Prefect itself is not changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "fastapi", "prefect._internal", "prefect")]
    moved: dict[logging.Logger, list[logging.Handler]] = {}
    for logger in loggers:
        streams = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)
                   and not isinstance(h, logging.FileHandler)]
        if streams or (logger.name == "prefect" and not logger.propagate):  # a config that keeps
            # Prefect's lines from the root logger (set by an earlier dictConfig) still reaches the file
            handler.setFormatter(handler.formatter or streams[0].formatter)
            moved[logger] = streams
            for h in streams:
                logger.removeHandler(h)
            logger.addHandler(handler)
    watcher = StageWatcher(progress)
    task_log = logging.getLogger("prefect.task_runs")
    task_log.addHandler(watcher)
    try:
        yield path
    finally:
        task_log.removeHandler(watcher)
        for logger, streams in moved.items():
            logger.removeHandler(handler)
            for h in streams:
                logger.addHandler(h)
        handler.close()


def run_demo(windows: int, peers: int, network: Path, resume: bool) -> str:
    """`gauntlet demo`: asks nothing and deletes nothing; shows progress, logs Prefect to a file."""
    progress = Progress(windows)
    if resume and not (network / "manifest.json").exists():
        progress.note(f"no network in {network} to resume; starting a new one")
    kept = None if resume else set_aside(network)
    if kept is not None:
        progress.note(f"kept the previous network as {kept} (to continue a network: `gauntlet demo --resume`)")
    if not (network / "manifest.json").exists():
        progress.set_stage("creating the network (and the corpus and tokenizer on first use)")
        init_network(network, peers=peers, overrides=DEMO_OVERRIDES)
    log = network / LOG_NAME
    progress.note(f"Prefect's log lines go to {log}")
    timeout = {} if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in os.environ else {
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: STARTUP_TIMEOUT_S}
    with logs_to_file(log, progress), showing(progress), temporary_settings(updates=timeout):
        progress.set_stage("starting Prefect's temporary API")
        return localnet(windows=windows, peers=peers, network=str(network), fresh=False)
