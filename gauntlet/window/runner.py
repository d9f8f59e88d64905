"""One window from start to end, by plain function calls (no Prefect).

The Prefect flow (flows/validate.py) runs the same stage functions as tasks; this direct path
is what replays, the local network's miners and the Prefect-overhead benchmark call.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from gauntlet.chain import Chain
from gauntlet.ratings import ValidatorState
from gauntlet.submission import Submission, parse_submission
from gauntlet.verdicts import Verdict
from gauntlet.window.checks import FilterResult, check_window
from gauntlet.window.context import ValidatorContext, state_hash
from gauntlet.window.evaluate import Evaluation, apply_bans, evaluate, random_baseline, select_for_evaluation
from gauntlet.window.fetch import FetchRecord, fetch_window
from gauntlet.window.outcome import Rated, rate_window
from gauntlet.window.plan import WindowPlan, plan_window
from gauntlet.window.step import aggregation_set, apply_aggregate


@dataclass
class Timings:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass
class Computed:
    """Stages 3-7 of a window: everything that is a function of the stored inputs."""

    filtered: FilterResult
    verdicts: dict[int, Verdict]
    evaluated: list[int]
    evaluation: Evaluation
    rated: Rated
    gather: list[int]
    stepped: bool
    checkpoint_before: str
    checkpoint_after: str


def load_submissions(ctx: ValidatorContext, plan: WindowPlan, records: list[FetchRecord],
                     uids: list[int]) -> dict[int, Submission]:
    """Parse the archived files of peers that already passed stage 1 (tasks pass paths, not tensors)."""
    by_uid = {r.uid: r for r in records}
    out = {}
    for uid in uids:
        parsed = parse_submission(Path(by_uid[uid].path).read_bytes(), window=plan.window, uid=uid,
                                  spec=ctx.spec, max_bytes=int(ctx.cfg.filter.max_file_mb * 2**20))
        if isinstance(parsed, Verdict):
            raise RuntimeError(f"archived file {by_uid[uid].path} passed stage 1 but no longer parses "
                               f"({parsed.detail}): the archive was altered")
        out[uid] = parsed
    return out


def filter_stage(ctx: ValidatorContext, plan: WindowPlan, records: list[FetchRecord],
                 state: ValidatorState) -> tuple[FilterResult, dict[int, Verdict], list[int]]:
    """Verdicts (bans applied) and the peers chosen for evaluation."""
    with ctx.lock:
        theta = ctx.load_theta(plan.window)
        filtered = check_window(plan, records, ctx.spec, theta, ctx.cfg)
    verdicts = apply_bans(filtered.verdicts, state, plan.window)
    candidates = [u for u, v in verdicts.items() if v.ok]
    chosen = select_for_evaluation(candidates, state.peers, plan.window, plan.seed, ctx.cfg)
    return filtered, verdicts, chosen


def baseline_stage(ctx: ValidatorContext, plan: WindowPlan) -> float | None:
    """L_rand_before once for the window, when scoring is split into several chunks."""
    with ctx.lock:
        ctx.load_theta(plan.window)
        return random_baseline(ctx, plan)


def score_stage(ctx: ValidatorContext, plan: WindowPlan, subs: dict[int, Submission],
                rand_before: float | None = None) -> Evaluation:
    with ctx.lock:
        ctx.load_theta(plan.window)
        return evaluate(ctx, plan, subs, rand_before)


def aggregate_stage(ctx: ValidatorContext, plan: WindowPlan, subs: dict[int, Submission], accepted: list[int],
                    state: ValidatorState) -> tuple[list[int], bool, str, str]:
    """theta_W -> theta_{W+1}, saved as the checkpoint of W + 1; returns (set, stepped, hashes)."""
    gather = aggregation_set(accepted, state.gather_for(plan.window))
    with ctx.lock:
        theta = ctx.load_theta(plan.window)
        before = state_hash(ctx.checkpoint_path(plan.window))
        ctx.holds = None  # stepped in place below: no longer theta_W until saved as W + 1
        stepped = apply_aggregate(theta, subs, gather, ctx.codec, ctx.spec.shapes, plan.lr)
        after = ctx.save_theta(plan.window + 1)
    return gather, stepped, before, after


def compute_window(ctx: ValidatorContext, plan: WindowPlan, records: list[FetchRecord], state: ValidatorState,
                   timings: Timings | None = None) -> Computed:
    timings = timings or Timings()
    with timings.stage("filter"):
        filtered, verdicts, chosen = filter_stage(ctx, plan, records, state)
    with timings.stage("score"):
        evaluation = score_stage(ctx, plan, {u: filtered.submissions[u] for u in chosen})
    with timings.stage("ratings"):
        rated = rate_window(state, plan.window, verdicts, filtered, evaluation, ctx.cfg)
    with timings.stage("aggregate"):
        gather, stepped, before, after = aggregate_stage(ctx, plan, filtered.submissions, filtered.accepted, state)
    return Computed(filtered, verdicts, chosen, evaluation, rated, gather, stepped, before, after)


def fetch_stage(ctx: ValidatorContext, chain: Chain, window: int, hotkey: str | None) -> tuple[WindowPlan, list[FetchRecord]]:
    plan = plan_window(chain, ctx.cfg, window, hotkey)
    return plan, fetch_window(plan, ctx.archive, ctx.cfg)
