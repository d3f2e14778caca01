"""The error tree. Every message says what went wrong, where, and what to change.

BudgetloopError
├── InputError            a user's file or argument: carries file, row/key and the fix (CLI exit 2)
│   └── PolicyError       a guardrail policy YAML: carries YAML path and line
├── GuardrailViolation    a change that breaks a rule: rule, channel, limit, proposed value
├── ConnectorError        an ad platform said no: platform, status, request id
│   ├── RateLimited       429 / platform throttling, with ``retry_after`` seconds
│   ├── TransientError    5xx, timeouts: safe to retry
│   └── RejectedByPlatform 4xx that retrying will not fix
├── IllegalTransition     a change request asked to move along an edge its state machine lacks
├── StalePlan             live budgets differ from the ones a request was planned against
└── FitError              a model that cannot be fitted or did not converge, with why
"""

from __future__ import annotations


class BudgetloopError(Exception):
    """Base of every error budgetloop raises on purpose."""


class InputError(BudgetloopError):
    """Bad input from a user: a file, a row, a key, an argument."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        key: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.row = row
        self.key = key
        self.fix = fix
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.key:
            where.append(f"`{self.key}`")
        prefix = (": ".join([", ".join(where)]) + ": ") if where else ""
        text = prefix + self.message
        if self.fix:
            text += f" — {self.fix}"
        return text


class PolicyError(InputError):
    """An invalid guardrail policy. ``problems`` lists every problem found, each with path and line."""

    def __init__(self, message: str, *, file: str | None = None, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message, file=file)

    def render(self) -> str:
        head = super().render()
        if not self.problems:
            return head
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class GuardrailViolation(BudgetloopError):
    def __init__(
        self, rule: str, channel: str | None, limit: float | None, proposed: float | None, detail: str
    ):
        self.rule = rule
        self.channel = channel
        self.limit = limit
        self.proposed = proposed
        super().__init__(f"guardrail `{rule}` broken for {channel or 'the portfolio'}: {detail}")


class ConnectorError(BudgetloopError):
    def __init__(
        self,
        message: str,
        *,
        platform: str,
        status: int | None = None,
        request_id: str | None = None,
        code: str | int | None = None,
    ) -> None:
        self.platform = platform
        self.status = status
        self.request_id = request_id
        self.code = code
        bits = [f"platform={platform}"]
        if status is not None:
            bits.append(f"status={status}")
        if code is not None:
            bits.append(f"code={code}")
        if request_id:
            bits.append(f"request_id={request_id}")
        super().__init__(f"{message} ({', '.join(bits)})")


class TransientError(ConnectorError):
    """A 5xx or a timeout: the request may be retried (with the same idempotency key)."""


class RateLimited(TransientError):
    def __init__(self, message: str, *, platform: str, retry_after: float, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, platform=platform, **kw)  # type: ignore[arg-type]


class RejectedByPlatform(ConnectorError):
    """A 4xx that retrying will not fix (bad budget, unknown campaign, edit cap reached)."""


class IllegalTransition(BudgetloopError):
    def __init__(self, request_id: object, state: str, event: str) -> None:
        self.request_id = request_id
        self.state = state
        self.event = event
        super().__init__(f"change request {request_id}: event `{event}` is not allowed in state `{state}`")


class StalePlan(BudgetloopError):
    """The live budgets no longer match those the request was planned against: re-plan."""


class FitError(BudgetloopError):
    """A model that could not be fitted, or that did not converge; the message says why."""
