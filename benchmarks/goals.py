"""The acceptance goals of issues 10 and 14, checked against the flat figures of a benchmark run.

`benchmarks/goals.toml` lists each goal: the key in results.json it is measured by, a comparison
and a target (a number, or the smallest of other figures), and why it matters; `if_missed` says
what is known about a miss. The table in RESULTS.md is computed from that file and the run's
figures, never written by hand, so a missed goal states by how much next to its measured value,
and editing the reasons needs no code.

    [[goal]]
    key = "honest_pay_cv"            # a key of results.json
    op = "<="                        # >=, <=, ==, >, <, or "reported" (met when it is a number)
    target = 0.3                     # or target_min_of = ["loss_ratio_median", ...]
    issue = 10
    goal = "Pay spread among equal-work honest peers"
    why = "..."
    if_missed = "..."                # optional, shown only when the goal is missed
"""

from __future__ import annotations

import math
import operator
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

GOALS = Path(__file__).resolve().parent / "goals.toml"
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, ">": operator.gt, "<": operator.lt}
REPORTED = "reported"
FIELDS = frozenset({"key", "op", "target", "target_min_of", "issue", "goal", "why", "if_missed"})


@dataclass(frozen=True)
class Goal:
    key: str
    op: str
    goal: str
    why: str
    issue: int | None = None
    target: float | None = None
    target_min_of: tuple[str, ...] = ()
    if_missed: str = ""


@dataclass(frozen=True)
class Verdict:
    goal: Goal
    measured: float | None
    target: float | None
    status: str
    """"met", "missed" or "not measured" (the figure, or every figure of the target, is absent)."""
    gap: float | None = None
    """How far the measured value is from the target (positive), when missed."""


def load_goals(path: Path = GOALS) -> list[Goal]:
    """The goals of `path`; a malformed entry is an error naming it and what is wrong."""
    try:
        entries = tomllib.loads(Path(path).read_text()).get("goal", [])
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{path} lists no [[goal]] entries")
    return [_goal(entry, f"{path} goal {i + 1} ({entry.get('key', 'no key')})") for i, entry in enumerate(entries)]


def _goal(entry: Mapping, where: str) -> Goal:
    unknown = sorted(set(entry) - FIELDS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(FIELDS))}")
    for name in ("key", "op", "goal", "why"):
        if not isinstance(entry.get(name), str) or not entry[name].strip():
            raise ValueError(f"{where}: `{name}` must be a non-empty string")
    op, target, min_of = entry["op"], entry.get("target"), entry.get("target_min_of", [])
    if op not in OPS and op != REPORTED:
        raise ValueError(f"{where}: op {op!r} is not one of {', '.join([*OPS, REPORTED])}")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))):
        raise ValueError(f"{where}: target must be a number, got {target!r}")
    if not isinstance(min_of, list) or not all(isinstance(k, str) for k in min_of):
        raise ValueError(f"{where}: target_min_of must be a list of results.json keys")
    if op in OPS and (target is None) == (not min_of):
        raise ValueError(f"{where}: op {op!r} needs exactly one of `target` and `target_min_of`")
    if op == REPORTED and (target is not None or min_of):
        raise ValueError(f"{where}: op 'reported' takes no target")
    return Goal(entry["key"], op, entry["goal"].strip(), entry["why"].strip(), entry.get("issue"),
                None if target is None else float(target), tuple(min_of), str(entry.get("if_missed", "")).strip())


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def check(goal: Goal, figures: Mapping[str, object]) -> Verdict:
    """The goal against the run's flat figures."""
    measured = _number(figures.get(goal.key))
    if goal.op == REPORTED:
        return Verdict(goal, measured, None, "met" if measured is not None else "not measured")
    if goal.target_min_of:
        found = [v for v in (_number(figures.get(k)) for k in goal.target_min_of) if v is not None]
        target = min(found) if found else None
    else:
        target = goal.target
    if measured is None or target is None:
        return Verdict(goal, measured, target, "not measured")
    if OPS[goal.op](measured, target):
        return Verdict(goal, measured, target, "met")
    return Verdict(goal, measured, target, "missed", abs(measured - target))


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if value == int(value) and abs(value) < 1e9 else f"{value:.4g}"


def _target(v: Verdict) -> str:
    g = v.goal
    if g.op == REPORTED:
        return "a number"
    if g.target_min_of:
        return f"{g.op} min({', '.join(f'`{k}`' for k in g.target_min_of)}) = {_fmt(v.target)}"
    return f"{g.op} {_fmt(v.target)}"


def _result(v: Verdict) -> str:
    if v.status != "missed":
        return v.status
    relative = ""
    if v.target and v.goal.op in ("<=", "<") and v.target > 0:
        relative = f" ({v.measured / v.target:.3g}x the target)"
    elif v.target and v.goal.op in (">=", ">"):
        relative = f" ({v.gap / abs(v.target):.0%} short)"
    return f"**missed** by {_fmt(v.gap)}{relative}"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def goals_table(verdicts: list[Verdict]) -> list[str]:
    """Markdown rows: goal, target, measured, met or missed by how much, why."""
    lines = ["| goal | target | measured | result | why |", "|---|---|---|---|---|"]
    for v in verdicts:
        g = v.goal
        name = f"{g.goal} (`{g.key}`{f', issue {g.issue}' if g.issue else ''})"
        label = "Missed" if v.status == "missed" else "Not measured"
        why = g.why + (f" **{label}:** {g.if_missed}" if v.status != "met" and g.if_missed else "")
        lines.append(f"| {_cell(name)} | {_cell(_target(v))} | {_fmt(v.measured)} | {_result(v)} | {_cell(why)} |")
    return lines


def goals_section(figures: Mapping[str, object], path: Path = GOALS, quick: bool = False) -> list[str]:
    """RESULTS.md's goals section: a count, the table, and where the goals and reasons live."""
    verdicts = [check(goal, figures) for goal in load_goals(path)]
    count = {s: sum(v.status == s for v in verdicts) for s in ("met", "missed", "not measured")}
    lines = ["## Goals (issues 10 and 14)", "",
             f"{count['met']} met, {count['missed']} missed, {count['not measured']} not measured of "
             f"{len(verdicts)}; computed from `benchmarks/goals.toml` (targets and reasons; edit there) and the "
             "figures below (`results.json`), with the `default` preset.", ""]
    if quick:
        lines += ["**Quick run (CI smoke):** a few windows only; these verdicts say nothing about acceptance.", ""]
    return lines + goals_table(verdicts) + [""]
