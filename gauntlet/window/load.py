"""Accepted files re-read from the validator's archive by the stages after "filter".

Stage results carry no tensors (they cross Prefect task boundaries and may go to other
processes), so "evaluate" and "step" parse the archived files again. The archive is the
validator's own disk: a file that passed stage 1 and no longer parses, or whose bytes no longer
match the hash recorded at fetch time, means the archive was altered, a fault of ours.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gauntlet.config import GauntletConfig
from gauntlet.submission import Submission, parse_submission
from gauntlet.verdicts import Verdict
from gauntlet.window.context import ModelContext
from gauntlet.window.fetch import FetchRecord
from gauntlet.window.plan import WindowPlan


class ArchiveAltered(RuntimeError):
    """An archived file changed after stage 1 accepted it."""


def load_submission(cfg: GauntletConfig, ctx: ModelContext, plan: WindowPlan, record: FetchRecord) -> Submission:
    data = Path(record.path).read_bytes()
    if record.content_hash is not None and hashlib.sha256(data).hexdigest() != record.content_hash:
        raise ArchiveAltered(f"archived file {record.path} no longer matches the hash recorded at fetch time")
    parsed = parse_submission(data, window=plan.window, uid=record.uid, spec=ctx.spec,
                              max_bytes=int(cfg.filter.max_file_mb * 2**20))
    if isinstance(parsed, Verdict):
        raise ArchiveAltered(f"archived file {record.path} passed stage 1 but no longer parses ({parsed.detail})")
    return parsed
