"""A progress display for long local runs: window i of N, the stage at work, peers scored, rejections.

The demo runs for minutes; without this the terminal showed nothing for a minute or two at a
time. On a terminal one status line is rewritten in place as stages finish; elsewhere (a pipe, a
CI log) only one line per finished window is written, so logs stay short. Counts come from the
audit tables the validator has just written, the same source `gauntlet audit` reads.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

import polars as pl

from gauntlet.audit.store import AuditStore
from gauntlet.window.pipeline import STAGES

PARTS_OF_EVALUATE = ("baseline", "screen")
SHOWN_STAGES: tuple[str, ...] = tuple(s for s in STAGES if s not in PARTS_OF_EVALUATE)
"""The validator's stages in pipeline order; `baseline` and `screen` are shown as part of `evaluate`."""


def next_stage(finished: str) -> str | None:
    """The stage that runs after `finished` (None after the last; unknown names give None)."""
    if finished in PARTS_OF_EVALUATE:
        return "evaluate"
    if finished not in SHOWN_STAGES:
        return None
    i = SHOWN_STAGES.index(finished)
    return SHOWN_STAGES[i + 1] if i + 1 < len(SHOWN_STAGES) else None


def window_counts(audit_root: str | Path, window: int) -> tuple[int, Counter[str]]:
    """(peers scored, rejections by reason) of one validated window, from its audit rows."""
    store = AuditStore(audit_root)
    if not store.has_window(window):
        raise FileNotFoundError(f"window {window} has no audit rows under {audit_root}")
    scores = store.read("scores", window_id=window)
    scored = scores.filter(pl.col("gradient_score").is_not_null()).height
    verdicts = store.read("verdicts", window_id=window).filter(pl.col("reason") != "ok")
    return scored, Counter(verdicts["reason"].to_list())


class Progress:
    """The status of a run of `total` windows, written to `stream` as it changes."""

    def __init__(self, total: int, stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if total < 1:
            raise ValueError(f"a run needs at least one window, got {total}")
        self.total, self.clock = total, clock
        self.stream = stream if stream is not None else sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.started = clock()
        self.done = 0
        self.window: int | None = None
        self.stage = "starting"
        self.miners = ""
        """What the miners are doing: they run beside the validator, one window ahead or more."""
        self.scored = 0
        self.rejections: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._width = 0

    def line(self) -> str:
        where = f"window {self.done + 1 if self.done < self.total else self.total} of {self.total}"
        if self.window is not None:
            where += f" (#{self.window})"
        miners = f"; miners: {self.miners}" if self.miners else ""
        return (f"[{self.clock() - self.started:5.0f} s] {where}: {self.stage}{miners}; "
                f"{self.scored} peers scored, {sum(self.rejections.values())} rejections so far")

    def set_stage(self, stage: str, window: int | None = None) -> None:
        with self._lock:
            self.stage = stage
            self.window = self.window if window is None else window
            if self.live:
                self._redraw()

    def set_miners(self, text: str) -> None:
        with self._lock:
            self.miners = text
            if self.live:
                self._redraw()

    def validated(self, window: int, scored: int, rejections: Mapping[str, int]) -> None:
        """A window is through the validator: add its counts and write a permanent line."""
        with self._lock:
            self.done += 1
            self.window = window
            self.scored += scored
            self.rejections.update(rejections)
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(rejections.items())) or "none"
            self._write(f"[{self.clock() - self.started:5.0f} s] validated window {self.done} of {self.total} "
                        f"(#{window}): {scored} peers scored; rejected: {reasons}", final=True)

    def note(self, text: str) -> None:
        with self._lock:
            self._write(text, final=True)

    def close(self) -> None:
        with self._lock:
            if self.live and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
            self._width = 0

    def _redraw(self) -> None:
        self._write(self.line(), final=False)

    def _write(self, text: str, final: bool) -> None:
        if self.live:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad + ("\n" if final else ""))
            self._width = 0 if final else len(text)
            if final:
                self._redraw_after_note()
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _redraw_after_note(self) -> None:
        """On a terminal the status line comes back under a permanent line."""
        text = self.line()
        self.stream.write(text)
        self._width = len(text)
