"""Retrospective replays: recompute a window from its stored inputs and compare with the record.

Inputs of window W: its `windows` row (the plan as read from the chain, the seed, the resolved
config), the archived peer files (`submissions.archived_path`), the checkpoint theta_W (its hash
is in `windows.checkpoint_before`) and the state after W - 1 (the `ratings` snapshot). Replays run
in a scratch folder and never touch the live checkpoints or tables.

With overrides (`--set rating.beta=20`) a range of windows is replayed under another setting,
carrying the replayed state forward while every window keeps its recorded inputs and model, and
the weights are shown beside the recorded ones: a what-if for research and for disputes.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gauntlet.audit.schema import TABLES, VOLATILE, conform
from gauntlet.audit.store import AuditStore
from gauntlet.config import GauntletConfig, with_overrides, with_preset
from gauntlet.ratings import ValidatorState
from gauntlet.state import restore_state
from gauntlet.verdicts import Reason
from gauntlet.window import audit
from gauntlet.window.audit import WindowResult
from gauntlet.window.context import checkpoint_path, state_hash
from gauntlet.window.fetch import FetchRecord, Fetched
from gauntlet.window.pipeline import Direct, compute
from gauntlet.window.plan import WindowPlan


class InputsGone(FileNotFoundError):
    """A stored input of the window (row, archived file, checkpoint) no longer exists."""


@dataclass
class ReplayReport:
    window: int
    differences: list[str] = field(default_factory=list)
    weights_recorded: dict[int, float] = field(default_factory=dict)
    weights_replayed: dict[int, float] = field(default_factory=dict)
    compared: int = 0
    rules_fired: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """uid -> the 2026 rules that fired for it in the replay (what made a what-if differ)."""

    @property
    def identical(self) -> bool:
        return not self.differences


def _records(store: AuditStore, window: int) -> list[FetchRecord]:
    verdicts = {r["uid"]: r for r in store.read("verdicts", window_id=window).iter_rows(named=True)}
    out = []
    for row in store.read("submissions", window_id=window).iter_rows(named=True):
        uid, path = row["uid"], row["archived_path"]
        if path is not None and not Path(path).exists():
            raise InputsGone(f"archived file of uid {uid} for window {window} is gone: {path}")
        lm = row["last_modified"].timestamp() if row["last_modified"] is not None else None
        error = None if path else Reason(verdicts[uid]["reason"])
        out.append(FetchRecord(uid, row["key"], row["size"], lm, row["content_hash"], path, error,
                               "" if path else verdicts[uid]["detail"], bool(row.get("time_trusted", True)),
                               row.get("provider")))
    return out


def _inputs(store: AuditStore, window: int) -> tuple[dict, WindowPlan, list[FetchRecord]]:
    if not store.has_window(window):
        raise InputsGone(f"window {window} has no audit record under {store.root}")
    row = store.read("windows", window_id=window).row(0, named=True)
    return row, WindowPlan.from_dict(json.loads(row["plan_json"])), _records(store, window)


class Scratch:
    """One scratch folder per distinct config for a whole replay: its workdir receives the recorded
    checkpoint of each window (hash checked), and the process's one model is reused."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._by_config: dict[str, Path] = {}

    def config_for(self, cfg: GauntletConfig, live_workdir: Path, window: int, expected_hash: str) -> GauntletConfig:
        """`cfg` pointed at a scratch workdir and audit root holding the recorded theta_W."""
        source = checkpoint_path(live_workdir, window)
        if not source.exists():
            raise InputsGone(f"checkpoint of window {window} is gone: {source}")
        if state_hash(source) != expected_hash:
            raise InputsGone(f"checkpoint {source} does not match the recorded hash {expected_hash[:12]}")
        key = cfg.model_dump_json()
        scratch = self._by_config.setdefault(key, self.folder / str(len(self._by_config)))
        target = checkpoint_path(scratch, window)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return with_overrides(cfg, {"validator": {"workdir": str(scratch)}, "audit": {"root": str(scratch / "audit")}})


def _same(a: object, b: object) -> bool:
    """Equality, with NaN equal to NaN (a recorded NaN replayed as NaN is reproduced)."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


NOT_RECOMPUTED: dict[str, frozenset[str]] = {
    "windows": VOLATILE["windows"],
    "weights": frozenset({"set_on_chain", "set_at_block", "chain_success", "chain_message"}),
}
"""Recorded columns a replay does not recompute: when the rows were written and how long each
stage took, and the chain's answer to the weights (a replay sets nothing on chain)."""


def _key(table: str, row: Mapping[str, object]) -> str:
    return f"{table}" + ("" if "uid" not in row else f" uid {row['uid']}")


def compare(store: AuditStore, window: int, cfg: GauntletConfig, done: WindowResult, report: ReplayReport) -> None:
    """Every recorded value of every table that the replay recomputes must be equal, bit for bit:
    the replay's own audit rows are built with the recorded config and compared cell by cell."""
    replayed = audit.tables(cfg, done, {})
    for table in TABLES:
        skip = NOT_RECOMPUTED.get(table, frozenset())
        recorded_rows = store.read(table, window_id=window).to_dicts()
        ours = {_key(table, r): r for r in conform(table, window, replayed[table]).to_pylist()}
        for row in recorded_rows:
            other = ours.pop(_key(table, row), None)
            for col, value in row.items():
                if col in skip or col == "window_id":
                    continue
                report.compared += 1
                got = None if other is None else other.get(col)
                if not _same(value, got):
                    report.differences.append(f"{_key(table, row)} {col}: recorded {value!r}, replayed {got!r}")
        report.differences.extend(f"{key}: not recorded, but the replay produced it" for key in ours)


def what_if(cfg: GauntletConfig, overrides: Sequence[str]) -> GauntletConfig:
    """The recorded config under a what-if: `preset=NAME` switches the rule set (`with_preset`:
    the network's paths, model and own thresholds stay), other `section.field=value` apply on top."""
    presets = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "preset"]
    rest = [o for o in overrides if o.partition("=")[0].strip() != "preset"]
    for name in presets:
        cfg = with_preset(cfg, name)
    return with_overrides(cfg, rest) if rest else cfg


def replay_window(store: AuditStore, window: int, state: ValidatorState | None = None,
                  overrides: Sequence[str] = (), live_workdir: Path | None = None,
                  scratch: Scratch | None = None) -> tuple[ReplayReport, ValidatorState]:
    """Recompute one window; compare with the record when no overrides are given."""
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix=f"gauntlet-replay-{window}-") as folder:
            return replay_window(store, window, state, overrides, live_workdir, Scratch(Path(folder)))
    row, plan, records = _inputs(store, window)
    recorded_cfg = GauntletConfig.model_validate_json(row["config_json"])
    cfg = what_if(recorded_cfg, overrides)
    state = restore_state(store, before_window=window) if state is None else state
    live = Path(live_workdir or recorded_cfg.validator.workdir)
    scratch_cfg = scratch.config_for(cfg, live, window, row["checkpoint_before"])
    done = compute(Direct(), scratch_cfg, plan, Fetched(tuple(records)), state)
    report = ReplayReport(window)
    report.weights_recorded = {r["uid"]: r["weight"] for r in store.read("weights", window_id=window).iter_rows(named=True)}
    report.weights_replayed = dict(done.rated.weights)
    report.rules_fired = {r.state.uid: r.rules_fired for r in done.rated.records if r.rules_fired}
    if not overrides:
        compare(store, window, recorded_cfg, done, report)
    return report, done.state


def replay_range(store: AuditStore, first: int, last: int, overrides: Sequence[str] = (),
                 live_workdir: Path | None = None,
                 progress: Callable[[ReplayReport, int, int], None] | None = None) -> list[ReplayReport]:
    """Replay windows in order, carrying the replayed state (what-if) from the first one on.
    `progress(report, n, total)` is told as each window is done (the CLI's progress lines)."""
    state = restore_state(store, before_window=first)
    reports = []
    windows = [w for w in store.windows() if first <= w <= last]
    with tempfile.TemporaryDirectory(prefix="gauntlet-replay-") as folder:
        scratch = Scratch(Path(folder))
        for window in windows:
            report, state = replay_window(store, window, state, overrides, live_workdir, scratch)
            reports.append(report)
            if progress is not None:
                progress(report, len(reports), len(windows))
    if not reports:
        raise InputsGone(f"no recorded windows between {first} and {last} under {store.root}")
    return reports


def render_reports(reports: Sequence[ReplayReport], what_if: bool) -> str:
    """Per window: identical or the differences; for a what-if, the weights side by side."""
    lines = []
    for r in reports:
        if what_if:
            lines.append(f"window {r.window}: weights recorded -> replayed")
            for uid in sorted(set(r.weights_recorded) | set(r.weights_replayed)):
                a, b = r.weights_recorded.get(uid, 0.0), r.weights_replayed.get(uid, 0.0)
                mark = "" if abs(a - b) < 1e-9 else f"   ({b - a:+.4f})"
                lines.append(f"  uid {uid:>4}: {a:.4f} -> {b:.4f}{mark}")
        elif r.identical:
            lines.append(f"window {r.window}: identical ({r.compared} values compared)")
        else:
            lines.append(f"window {r.window}: {len(r.differences)} of {r.compared} values differ")
            lines.extend(f"  {d}" for d in r.differences)
    return "\n".join(lines)
