"""The audit tables: every input that decided a score and every outcome, per window, in Parquet.

`AuditStore` writes and reads them (one immutable file per table per window), `run_sql` answers
read-only SQL over DuckDB views, `explain` tells one peer's story in one window in plain words.
"""

from gauntlet.audit.explain import AuditLookupError, explain
from gauntlet.audit.query import FORMATS, QueryError, ReadOnlyError, check_read_only, connect, format_frame, run_sql
from gauntlet.audit.schema import DESCRIPTIONS, SCHEMAS, TABLES, SchemaError, conform
from gauntlet.audit.store import AuditConflict, AuditStore

__all__ = [
    "DESCRIPTIONS", "FORMATS", "SCHEMAS", "TABLES",
    "AuditConflict", "AuditLookupError", "AuditStore", "QueryError", "ReadOnlyError", "SchemaError",
    "check_read_only", "conform", "connect", "explain", "format_frame", "run_sql",
]
