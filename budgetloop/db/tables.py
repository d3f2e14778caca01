"""Import every table module so ``Base.metadata`` knows every table (migrations, drift check)."""

from budgetloop.db import audit, experiments, loop, metrics, ops, policy  # noqa: F401
from budgetloop.db.base import Base

metadata = Base.metadata
