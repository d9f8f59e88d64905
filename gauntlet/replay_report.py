"""How `gauntlet replay` talks to a person: progress while it runs, the answer first, details on request.

A replay costs a model step per window, so a range takes minutes: each finished window gets one
line on stderr ("window 5 (3/7): identical"). Then the summary: windows compared, values that
differ, and the weight each uid would gain or lose, labelled with the peer's behaviour when the
audit root belongs to a local network (its manifest.json is ground truth that the validator never
reads; only reports use it). Every differing value is printed only with `--details`
(`gauntlet.replay.render_reports`).

Refusals name the case, because the remedies differ: a range past the recorded windows is told the
recorded range; a window the validator never validated has no record at all; a window whose record
is there but whose archived files or checkpoint were pruned cannot be recomputed any more.

Works on anything shaped like `gauntlet.replay.ReplayReport`; imports nothing heavy.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gauntlet.replay import ReplayReport

MOVED = 1e-9
"""A weight change below this is no change (the weights are normalised floats)."""


class RangeRefused(ValueError):
    """The requested windows are not (all) in the audit tables; the message says what is."""


def spans(windows: Iterable[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    out: list[str] = []
    for w in sorted(set(windows)):
        if out and out[-1][1] == w - 1:
            out[-1] = (out[-1][0], w)
        else:
            out.append((w, w))
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in out)


def check_range(first: int, last: int, recorded: Sequence[int], root: str | Path) -> list[int]:
    """The windows of first..last that were never validated (gaps a replay skips); refuses a
    range that is backwards, past the recorded windows, or holds no recorded window at all."""
    if first > last:
        raise RangeRefused(f"--first {first} is after --last {last}")
    if not recorded:
        raise RangeRefused(f"no window was ever validated under {root} (the audit tables are empty); "
                           "check --root, or validate some windows first")
    lo, hi = min(recorded), max(recorded)
    what, was = (f"window {first}", "was") if first == last else (f"windows {first}-{last}", "were")
    if first < lo or last > hi:
        raise RangeRefused(f"{what} {'is' if first == last else 'are'} outside the recorded windows: "
                           f"{root} holds windows {spans(recorded)}")
    gaps = sorted(set(range(first, last + 1)) - set(recorded))
    if len(gaps) == last - first + 1:
        raise RangeRefused(f"{what} {was} never validated: no audit record under {root} "
                           f"(recorded windows: {spans(recorded)})")
    return gaps


def pruned(window: int | None, reason: object) -> str:
    """A recorded window whose inputs are gone: the record stays, the recomputation cannot."""
    which = "the inputs of a recorded window" if window is None else f"window {window} is recorded, but its inputs"
    return (f"{which} were pruned ({reason}); a replay needs the archived peer files and the "
            "checkpoint of each window (validator.workdir: archive/ and checkpoints/)")


def progress_line(report: ReplayReport, n: int, total: int, what_if: bool) -> str:
    """One window done: "window 5 (3/7): identical"."""
    head = f"window {report.window} ({n}/{total})"
    if what_if:
        moved = len(_moved_uids([report]))
        return f"{head}: {'weights unchanged' if not moved else f'weights of {moved} uid(s) move'}"
    if report.identical:
        return f"{head}: identical"
    return f"{head}: {len(report.differences)} of {report.compared} values differ"


def mean_weights(reports: Sequence[ReplayReport]) -> dict[int, tuple[float, float]]:
    """uid -> (recorded, replayed) weight, each the mean over the windows (absent counts as 0)."""
    uids = {u for r in reports for u in (*r.weights_recorded, *r.weights_replayed)}
    n = max(len(reports), 1)
    return {u: (sum(r.weights_recorded.get(u, 0.0) for r in reports) / n,
                sum(r.weights_replayed.get(u, 0.0) for r in reports) / n) for u in sorted(uids)}


def _moved_uids(reports: Sequence[ReplayReport]) -> list[int]:
    return [u for u, (a, b) in mean_weights(reports).items() if abs(b - a) >= MOVED]


def network_behaviours(root: str | Path) -> dict[int, str]:
    """uid -> behaviour when `root` is the audit folder of a local network (`<network>/audit` next
    to its manifest.json); {} otherwise, or when the manifest cannot be read (labels are optional)."""
    root = Path(root).resolve()
    manifest = root.parent / "manifest.json"
    if root.name != "audit" or not manifest.is_file():
        return {}
    try:
        data = json.loads(manifest.read_text())
        members = [*data["peers"], data["validator"]]
        return {int(m["uid"]): str(m["behaviour"]) for m in members}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _weight_lines(reports: Sequence[ReplayReport], behaviours: Mapping[int, str]) -> list[str]:
    means = mean_weights(reports)
    moved = sorted(_moved_uids(reports), key=lambda u: (-round(abs(means[u][1] - means[u][0]), 9), u))
    if not moved:
        return [f"weights: unchanged for all {len(means)} uids"]
    lines = ["weight moved per uid (mean over the windows, recorded -> replayed):"]
    width = max((len(behaviours.get(u, "")) for u in moved), default=0)
    for u in moved:
        a, b = means[u]
        label = f" {behaviours.get(u, ''):<{width}}" if width else ""
        lines.append(f"  uid {u:>4}{label}  {a:.4f} -> {b:.4f}  ({b - a:+.4f})")
    if len(means) > len(moved):
        lines.append(f"  the other {len(means) - len(moved)} uids: unchanged")
    return lines


def _rule_lines(reports: Sequence[ReplayReport], behaviours: Mapping[int, str]) -> list[str]:
    """Which 2026 rules fired in the replay, per uid, with how many windows each fired in."""
    fired: dict[int, dict[str, int]] = {}
    for r in reports:
        for uid, rules in getattr(r, "rules_fired", {}).items():
            for rule in rules:
                fired.setdefault(uid, {})[rule] = fired.setdefault(uid, {}).get(rule, 0) + 1
    if not fired:
        return []
    lines = ["rules that fired in the replay (windows):"]
    for uid in sorted(fired):
        label = f" {behaviours[uid]}" if uid in behaviours else ""
        what = "; ".join(f"{rule} ({n})" for rule, n in sorted(fired[uid].items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"  uid {uid:>4}{label}: {what}")
    return lines


def _comparison_line(reports: Sequence[ReplayReport]) -> str:
    differing = [r for r in reports if not r.identical]
    compared = sum(r.compared for r in reports)
    if not differing:
        return f"all {len(reports)} identical; {compared} recorded values compared, none differ"
    where = ", ".join(f"window {r.window}: {len(r.differences)}" for r in differing)
    count = sum(len(r.differences) for r in differing)
    return (f"{len(reports) - len(differing)} identical, {len(differing)} differ; "
            f"{count} of {compared} recorded values differ ({where})")


def summary(reports: Sequence[ReplayReport], overrides: Sequence[str] = (),
            behaviours: Mapping[int, str] | None = None, never_validated: Sequence[int] = ()) -> str:
    """The answer first: what was replayed, what differs, whose weight moved."""
    windows = [r.window for r in reports]
    head = f"replayed {len(reports)} window{'s' if len(reports) != 1 else ''} ({spans(windows)})"
    if overrides:
        lines = [f"{head} with {' '.join(overrides)}: a what-if, nothing is compared"]
    else:
        lines = [f"{head}: {_comparison_line(reports)}"]
    if never_validated:
        lines.append(f"never validated, skipped: {spans(never_validated)}")
    lines += _weight_lines(reports, behaviours or {})
    lines += _rule_lines(reports, behaviours or {})
    if overrides or any(not r.identical for r in reports):
        lines.append("--details shows " + ("each window's weights" if overrides else "every differing value"))
    return "\n".join(lines)
