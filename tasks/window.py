"""The stages of one window as Prefect tasks: the pipeline's own functions, decorated.

Each task is `gauntlet.window.pipeline.STAGES[name]` with Prefect's options: a name, no result
caching or persistence (stage results are small records; tensors never cross a task boundary),
and retries where the stage talks to the chain. `PrefectStages` is the caller the flow hands to
the pipeline: the only difference between the flow and the direct path is that each stage runs
as a task here.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import dask
from prefect import Task, task
from prefect.cache_policies import NONE

from gauntlet.clock import NotReady
from gauntlet.window.pipeline import STAGES, Direct
from tasks.limits import bucket_read_gate


def _retry_unless_not_ready(task, task_run, state) -> bool:
    """A window that has not closed yet will not close during a retry: fail at once."""
    return not isinstance(state.result(raise_on_failure=False), NotReady)


CHAIN_RETRIES = dict(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_retry_unless_not_ready)
"""The stages that talk to the chain (or the validator's own bucket) retry with back-off."""
RETRIES = {"plan": CHAIN_RETRIES, "weights": CHAIN_RETRIES, "publish": CHAIN_RETRIES}

TASKS: dict[str, Task] = {
    name: task(fn, name=name, cache_policy=NONE, persist_result=False, **RETRIES.get(name, {}))
    for name, fn in STAGES.items()
}


class PrefectStages(Direct):
    """Runs each stage as its Prefect task inside the current flow run; timing as `Direct`."""

    def __init__(self, window: int, parallel: bool = False, gpu: bool = False) -> None:
        super().__init__()
        self.window = window
        self.parallel = parallel
        self.gpu = gpu
        """Route fanned-out calls to Dask workers started with `--resources GPU=1`."""

    def call(self, name: str, *args: Any) -> Any:
        if name == "fetch":  # bucket reads go through the server's global rate limit (`tasks.limits`)
            args = (*args, bucket_read_gate(args[0]))
        return TASKS[name].with_options(task_run_name=f"{name}-w{self.window}")(*args)

    def call_many(self, name: str, arg_lists: Sequence[tuple]) -> list[Any]:
        """Submitted together to the flow's task runner (threads, or Dask workers), then awaited."""
        with dask.annotate(resources={"GPU": 1}) if self.gpu else nullcontext():
            futures = [TASKS[name].with_options(task_run_name=f"{name}-w{self.window}-{i}").submit(*args)
                       for i, args in enumerate(arg_lists)]
        return [f.result() for f in futures]
