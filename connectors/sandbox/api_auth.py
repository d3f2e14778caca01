"""Scoped API tokens for the sandbox dialects.

Each token grants scopes such as ``google:read`` or ``meta:write``. A request without a known token is
refused with 401, one whose token lacks the route's scope with 403, each in the dialect's own error
shape. The dev tokens below are documented defaults for local runs and tests; they protect nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

DIALECT_SCOPES: dict[str, tuple[str, ...]] = {
    "google": ("google:read", "google:write"),
    "meta": ("meta:read", "meta:write"),
    "retail": ("retail:read", "retail:write"),
    "store": ("store:read",),
}

#: The sandbox's documented dev tokens: one read+write token per dialect.
DEV_TOKENS: dict[str, str] = {
    "google": "sandbox-google-dev-token",
    "meta": "sandbox-meta-dev-token",
    "retail": "sandbox-retail-dev-token",
    "store": "sandbox-store-dev-token",
}

#: Read-only tokens, to check that a missing write scope is refused.
READ_ONLY_TOKENS: dict[str, str] = {
    "google": "sandbox-google-readonly-token",
    "meta": "sandbox-meta-readonly-token",
    "retail": "sandbox-retail-readonly-token",
}


def default_token_scopes() -> dict[str, frozenset[str]]:
    scopes: dict[str, frozenset[str]] = {}
    for dialect, token in DEV_TOKENS.items():
        scopes[token] = frozenset(DIALECT_SCOPES[dialect])
    for dialect, token in READ_ONLY_TOKENS.items():
        scopes[token] = frozenset({f"{dialect}:read"})
    return scopes


class TokenTable:
    """token -> scopes. ``check`` answers None (allowed), 401 (unknown token) or 403 (missing scope)."""

    def __init__(self, tokens: Mapping[str, Iterable[str]] | None = None) -> None:
        source = default_token_scopes() if tokens is None else tokens
        self._scopes = {token: frozenset(scopes) for token, scopes in source.items()}

    def check(self, token: str | None, scope: str) -> int | None:
        if not token or token not in self._scopes:
            return 401
        if scope not in self._scopes[token]:
            return 403
        return None


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
