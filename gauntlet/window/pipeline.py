"""One window, defined once: the ordered stages and the one runner every caller uses.

```
restore   the state W starts from, rebuilt from the audit tables          -> ValidatorState
plan      the chain's view of W: put window, seed, peers, commitments      -> WindowPlan
fetch     every peer's file into the archive (bounded per peer)            -> Fetched
filter    timing, format, sync, copies, bans -> one verdict per peer       -> Filtered
evaluate  each chosen peer's loss score and own-data indicator             -> Evaluated
rate      OpenSkill match, penalties, final scores, weights, gather list   -> Rated
step      the gather set's updates aggregated: theta_{W+1}                 -> Stepped
weights   weights set on chain when due (at most once per window)          -> WeightsResult | None
publish   the gather schedule, what was aggregated (uids, file hashes) and,
          every few windows, theta_{W+1} with its state, for miners and joiners -> Published
audit     one immutable Parquet file per table
```

Every stage is a plain function of small, typed, picklable values (``cfg`` and earlier stage
results; never a model or a tensor), so the same functions run as plain calls (`Direct`: replays,
the local network, benchmarks) or as Prefect tasks (`flows/validate.py` passes a caller that maps
each stage name to its task). How a stage is called, and its wall time, is the caller's business;
the order lives only here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any, Iterator

from gauntlet.audit.store import AuditStore
from gauntlet.config import GauntletConfig
from gauntlet.ratings import ValidatorState
from gauntlet.state import restore
from gauntlet.window import audit, evaluate, fetch, filter as filter_, plan as plan_, publish, rate, step
from gauntlet.window.audit import WindowResult
from gauntlet.window.evaluate import Evaluated
from gauntlet.window.fetch import Fetched
from gauntlet.window.plan import WindowPlan

STAGES: dict[str, Callable[..., Any]] = {
    "restore": restore,
    "plan": plan_.run,
    "fetch": fetch.run,
    "filter": filter_.run,
    "baseline": evaluate.baseline,
    "screen": evaluate.screen,
    "evaluate": evaluate.run,
    "rate": rate.run,
    "step": step.run,
    "weights": publish.weights,
    "publish": publish.publish,
    "audit": audit.run,
}
"""Stage name -> stage function, in the order a window runs them (`baseline` and `screen` are
parts of "evaluate" when scoring is split into chunks: L_rand_before, or the screening estimates
and the exact set, computed once for all chunks)."""


class Direct:
    """Calls each stage as a plain function and keeps its wall time (stored in the audit row)."""

    parallel = False
    """Whether `map` can run its calls at once on separate devices (a Dask cluster)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def call(self, name: str, *args: Any) -> Any:
        return STAGES[name](*args)

    def call_many(self, name: str, arg_lists: Sequence[tuple]) -> list[Any]:
        return [self.call(name, *args) for args in arg_lists]

    def __call__(self, name: str, *args: Any) -> Any:
        with self.timed(name):
            return self.call(name, *args)

    def map(self, name: str, arg_lists: Sequence[tuple]) -> list[Any]:
        with self.timed(name):
            return self.call_many(name, arg_lists)


def already_validated(cfg: GauntletConfig, window: int) -> bool:
    return AuditStore(cfg.audit.root).has_window(window)


def _evaluate(run: Direct, cfg: GauntletConfig, plan: WindowPlan, fetched: Fetched, chosen: Sequence[int]) -> Evaluated:
    """All chosen peers in one call; split into chunks only where the caller runs them in
    parallel on separate devices (on one machine they would queue on one model lock)."""
    size = cfg.scoring.chunk_peers if run.parallel else max(1, len(chosen))
    if not run.parallel or len(chosen) <= size:
        return Evaluated.merge(run.map("evaluate", [(cfg, plan, fetched, list(chosen), None)]))
    if cfg.screening.enabled:  # estimates for all at once, then the exact set in chunks
        screened = run("screen", cfg, plan, fetched, list(chosen))
        exact = list(screened.exact)
        chunks = [exact[i:i + size] for i in range(0, len(exact), size)] or [[]]
        parts = run.map("evaluate", [(cfg, plan, fetched, c, screened.rand_before, screened) for c in chunks])
        return evaluate.calibrate(screened, Evaluated.merge(parts))
    chunks = [list(chosen[i:i + size]) for i in range(0, len(chosen), size)]
    rand_before = run("baseline", cfg, plan)
    return Evaluated.merge(run.map("evaluate", [(cfg, plan, fetched, c, rand_before) for c in chunks]))


def compute(run: Direct, cfg: GauntletConfig, plan: WindowPlan, fetched: Fetched, state: ValidatorState) -> WindowResult:
    """Stages filter to step: the part of a window that is a function of its stored inputs
    (what a replay recomputes)."""
    filtered = run("filter", cfg, plan, fetched, state)
    evaluated = _evaluate(run, cfg, plan, fetched, filtered.chosen)
    rated = run("rate", cfg, plan.window, state, filtered, evaluated)
    stepped = run("step", cfg, plan, fetched, filtered, state)
    return WindowResult(plan, fetched, filtered, evaluated, rated, stepped)


def validate_window(run: Direct, cfg: GauntletConfig, window: int, *, state: ValidatorState | None = None,
                    rerun: bool = False, force_weights: bool = False) -> WindowResult:
    """One whole window, every stage in order; writes the audit tables.

    `state` may be passed by a caller that carries it in memory (it must equal the restored one);
    `rerun` replaces the window's rows and keeps its recorded weights unless `force_weights`.
    """
    state = run("restore", cfg, window) if state is None else state
    plan = run("plan", cfg, window)
    fetched = run("fetch", cfg, plan)
    result = compute(run, cfg, plan, fetched, state)
    weights = run("weights", cfg, window, result.rated, force_weights, rerun)
    published = run("publish", cfg, window, result.rated, result.stepped, result.fetched, rerun)
    result = WindowResult(**{**result.__dict__, "weights": weights, "published": published})
    run("audit", cfg, result, dict(run.seconds), rerun)
    return result
