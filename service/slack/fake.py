"""A local fake Slack: a real HTTP server on loopback that the real slack-sdk client talks to.

It implements the Web API methods budgetloop calls (``auth.test``, ``chat.postMessage``, ``chat.update``,
``chat.postEphemeral``) under ``/api/``, keeps every message (with its latest blocks and thread), records
every call, receives ``response_url`` posts, and can play a user clicking a button: it sends our service a
``block_actions`` interaction, form-encoded as ``payload=...`` and signed with ``X-Slack-Signature`` /
``X-Slack-Request-Timestamp`` exactly as Slack does.

    with FakeSlack(signing_secret="s") as slack:
        client = WebClient(token="xoxb-test", base_url=slack.api_url)
        ...
        slack.click(service_url + "/slack/interactions", user_id="U1", action="approve", value="7",
                    timestamp=int(clock.now().timestamp()))

Tests and ``budgetloop demo`` use it; nothing here is imported by the service itself.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from slack_sdk.signature import SignatureVerifier


class ServerThread:
    """Run an ASGI app with uvicorn on a free loopback port in a daemon thread (httpx's test pattern)."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self.host, self.port = self._sock.getsockname()[:2]
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        )
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@contextmanager
def serve_in_thread(app: Any) -> Iterator[ServerThread]:
    server = ServerThread(app).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    updates: int = 0
    history: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def buttons(self) -> list[str]:
        """The action ids of the message's current buttons (empty once decided)."""
        return [
            str(el.get("action_id"))
            for block in self.blocks
            if block.get("type") == "actions"
            for el in block.get("elements", [])
        ]


@dataclass(frozen=True)
class Call:
    method: str
    args: dict[str, Any]
    token: str | None


class FakeSlack:
    def __init__(self, *, signing_secret: str, bot_token: str | None = None) -> None:
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.calls: list[Call] = []
        self.messages: dict[str, Message] = {}
        self.responses: list[dict[str, Any]] = []  # posts to response_url, in order
        self.ephemeral: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._next_ts = 1_767_225_600_000_000  # 2026-01-01, in microseconds; Slack ts look like "secs.micros"
        self._server: ServerThread | None = None
        self.app = self._build_app()

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        self._server = ServerThread(self.app).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Slack is not running: call start() or use it as a context manager")
        return self._server.url

    @property
    def api_url(self) -> str:
        """What to give ``WebClient(base_url=...)`` (and ``BUDGETLOOP_SLACK_BASE_URL``)."""
        return self.url + "/api/"

    # --- what the tests look at -------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def replies(self, ts: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages.values() if m.thread_ts == ts]

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait (briefly, polling) for background work in the service to reach Slack."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"the fake Slack did not see what was expected within {timeout} s")
            time.sleep(0.01)

    # --- playing a user ---------------------------------------------------------------------------

    def response_url(self, key: str) -> str:
        return f"{self.url}/response/{key}"

    def interaction_body(
        self, *, user_id: str, action: str, value: str, message_ts: str | None = None, response_key: str = "r"
    ) -> bytes:
        payload = {
            "type": "block_actions",
            "user": {"id": user_id, "username": user_id.lower()},
            "team": {"id": "TFAKE"},
            "channel": {"id": self.messages[message_ts].channel if message_ts in self.messages else "CFAKE"},
            "message": {"ts": message_ts} if message_ts else {},
            "response_url": self.response_url(response_key),
            "trigger_id": f"trigger-{response_key}",
            "actions": [{"type": "button", "action_id": action, "value": value, "action_ts": "0"}],
        }
        return urlencode({"payload": json.dumps(payload)}).encode()

    def signed_headers(self, body: bytes, *, timestamp: int, secret: str | None = None) -> dict[str, str]:
        signature = SignatureVerifier(secret or self.signing_secret).generate_signature(
            timestamp=str(timestamp), body=body
        )
        assert signature is not None
        return {
            "X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        }

    def click(
        self,
        interactions_url: str,
        *,
        user_id: str,
        action: str,
        value: str,
        timestamp: int,
        message_ts: str | None = None,
        response_key: str = "r",
        secret: str | None = None,
        retry_num: int | None = None,
    ) -> httpx.Response:
        """Send a signed button click to our service, as Slack would (``secret`` overrides to forge one)."""
        body = self.interaction_body(
            user_id=user_id, action=action, value=value, message_ts=message_ts, response_key=response_key
        )
        headers = self.signed_headers(body, timestamp=timestamp, secret=secret)
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
            headers["X-Slack-Retry-Reason"] = "http_timeout"
        return httpx.post(interactions_url, content=body, headers=headers, timeout=10)

    # --- the server -------------------------------------------------------------------------------

    def _ts(self) -> str:
        self._next_ts += 100
        return f"{self._next_ts // 1_000_000}.{self._next_ts % 1_000_000:06d}"

    @staticmethod
    def _channel_id(channel: str) -> str:
        if channel.startswith("C") and channel[1:].isalnum() and channel.isupper():
            return channel
        return "C" + hashlib.sha256(channel.encode()).hexdigest()[:8].upper()

    def _method(self, method: str, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        with self._lock:
            self.calls.append(Call(method, args, token))
            if self.bot_token is not None and token != self.bot_token:
                return {"ok": False, "error": "invalid_auth"}
            if method == "auth.test":
                return {
                    "ok": True,
                    "url": self.url + "/",
                    "team": "fake",
                    "user": "budgetloop",
                    "user_id": "UBOT",
                }
            if method in ("chat.postMessage", "chat.update", "chat.postEphemeral") and not args.get(
                "channel"
            ):
                return {"ok": False, "error": "channel_not_found"}
            if method == "chat.postMessage":
                ts = self._ts()
                channel = self._channel_id(str(args["channel"]))
                blocks = list(args.get("blocks") or [])
                thread = args.get("thread_ts")
                self.messages[ts] = Message(channel, ts, str(args.get("text", "")), blocks, thread)
                return {
                    "ok": True,
                    "channel": channel,
                    "ts": ts,
                    "message": {"text": args.get("text"), "ts": ts},
                }
            if method == "chat.update":
                message = self.messages.get(str(args.get("ts")))
                if message is None or message.channel != self._channel_id(str(args["channel"])):
                    return {"ok": False, "error": "message_not_found"}
                message.history.append(message.blocks)
                message.blocks = list(args.get("blocks") or [])
                message.text = str(args.get("text", message.text))
                message.updates += 1
                return {"ok": True, "channel": message.channel, "ts": message.ts, "text": message.text}
            if method == "chat.postEphemeral":
                self.ephemeral.append(dict(args))
                return {"ok": True, "message_ts": self._ts()}
            return {"ok": False, "error": "unknown_method"}

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake Slack", openapi_url=None, docs_url=None, redoc_url=None)

        @app.post("/api/{method}")
        async def api(method: str, request: Request) -> JSONResponse:
            raw = await request.body()
            args: dict[str, Any] = dict(request.query_params)
            if raw:
                if request.headers.get("content-type", "").startswith("application/json"):
                    args.update(json.loads(raw))
                else:
                    for key, values in parse_qs(raw.decode()).items():
                        args[key] = values[-1]
                    for key in ("blocks", "attachments"):
                        if isinstance(args.get(key), str):
                            args[key] = json.loads(args[key])
            auth = request.headers.get("authorization", "")
            token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.pop("token", None)
            return JSONResponse(self._method(method, args, token))

        @app.post("/response/{key}")
        async def response(key: str, request: Request) -> PlainTextResponse:
            body = json.loads(await request.body() or b"{}")
            with self._lock:
                self.responses.append({"key": key, **body})
            return PlainTextResponse("ok")

        return app
