"""Thin Prefect tasks, one per stage of a window; the work is in `gauntlet/`.

Tasks pass small records (plans, fetch records, verdicts, scores, paths), never models or
tensors, and never let Prefect persist or hash them (`cache_policy=NONE`). Retries with backoff
sit on the validator's own chain I/O only; storage has its own retry layer (s3fs/botocore) and a
peer's unreachable bucket is a verdict, not a task failure.
"""
