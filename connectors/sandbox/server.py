"""The sandbox served for real: uvicorn in a thread on a free loopback port.

    with SandboxServer(market) as sandbox:
        connectors = sandbox_connectors(sandbox.base_url)
        ...

Used by the tests, ingestion and the demo. The socket is bound before the thread starts, so
``base_url`` is known at once; leaving the block releases hung answers (``slow`` and
``timeout_after_apply`` faults) and stops the server.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import uvicorn
from fastapi import FastAPI

from connectors.sandbox.api_state import AppliedChange, MarketLike, SandboxState
from connectors.sandbox.app import create_sandbox_app, sandbox_state
from connectors.sandbox.faults import Fault, InjectedDrop

__all__ = ["SandboxServer"]


class _InjectedDropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedDrop))


def _quiet_injected_drops() -> None:
    """Connections cut by a ``drop`` fault are on purpose: keep them out of uvicorn's error log."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _InjectedDropFilter) for f in logger.filters):
        logger.addFilter(_InjectedDropFilter())


class SandboxServer:
    def __init__(
        self,
        app_or_market: FastAPI | MarketLike,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tokens: Mapping[str, Iterable[str]] | None = None,
        edit_caps: Mapping[str, int] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.app = self._make_app(app_or_market, tokens, edit_caps)
        self.state: SandboxState = sandbox_state(self.app)
        self.host = host
        self._port = port
        self._start_timeout = start_timeout
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        config = uvicorn.Config(
            self._asgi,
            interface="asgi3",
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        self._server = uvicorn.Server(config)
        _quiet_injected_drops()

    @staticmethod
    def _make_app(
        app_or_market: FastAPI | MarketLike,
        tokens: Mapping[str, Iterable[str]] | None,
        edit_caps: Mapping[str, int] | None,
    ) -> FastAPI:
        if isinstance(app_or_market, FastAPI):
            return app_or_market
        return create_sandbox_app(app_or_market, tokens=tokens, edit_caps=edit_caps)

    async def _asgi(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    def replace(
        self,
        app_or_market: FastAPI | MarketLike,
        *,
        tokens: Mapping[str, Iterable[str]] | None = None,
        edit_caps: Mapping[str, int] | None = None,
    ) -> SandboxState:
        """Serve another market (or app) on the same port from the next request on.

        Cheaper than a new server per test or per counterfactual run; answers the old app still holds
        (hung by a fault) are released.
        """
        app = self._make_app(app_or_market, tokens, edit_caps)
        old, self.app, self.state = self.state, app, sandbox_state(app)
        old.stopping.set()
        return self.state

    @property
    def market(self) -> MarketLike:
        return self.state.market

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError(
                "the sandbox server is not started: use `with SandboxServer(...)` or call start()"
            )
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        if self._thread is not None:
            raise RuntimeError("the sandbox server is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._sock = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"sandbox-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox server did not start on {self.host}:{self._port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.state.stopping.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._sock is not None:
            self._sock.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # In-process shortcuts for the same controls as the admin API.
    def advance_to(self, day: date) -> None:
        self.state.advance_to(day)

    def arm(self, *faults: Fault | Mapping[str, Any]) -> None:
        for fault in faults:
            self.state.faults.arm(fault if isinstance(fault, Fault) else Fault.model_validate(fault))

    def applied(self) -> list[AppliedChange]:
        with self.state.lock:
            return list(self.state.applied)
