"""The database layer: one declarative ``Base`` and the table modules registered on it.

Table modules (each owned by one domain):
- ``budgetloop.db.metrics``: ad accounts, campaigns, raw and clean daily metrics, ingest batches.
- ``budgetloop.db.policy``: versioned guardrail policies.
- ``budgetloop.db.audit``: the append-only, hash-chained ``audit_log``, digests, API tokens.
- ``budgetloop.db.loop``: model versions, change requests, executions, monitoring, scenarios.
- ``budgetloop.db.ops``: job runs and job locks.

Import :func:`budgetloop.db.all_tables` (or this package's ``Base.metadata`` after importing
``budgetloop.db.tables``) to see every table, e.g. for the migration drift check.
"""

from budgetloop.db.base import Base, UTCDateTime
from budgetloop.db.session import make_engine, session_scope, upgrade_database

__all__ = ["Base", "UTCDateTime", "make_engine", "session_scope", "upgrade_database"]
