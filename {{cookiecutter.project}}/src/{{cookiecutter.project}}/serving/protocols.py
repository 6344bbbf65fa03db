"""uvicorn's HTTP/1.1 protocols with the endpoint's defences, on either HTTP parser.

`httptools` (uvicorn's C parser, llhttp) is the default; `h11` (pure Python) stays selectable
(`--http h11`) for comparison. What each defence is (tests/test_serving.py tries each as an
attacker would, on both parsers):

* conflicting or malformed Content-Length, bad header lines: the parser refuses them (llhttp also
  refuses two equal Content-Length headers and Content-Length beside chunked transfer encoding);
  `send_400_response` answers a JSON 400 instead of uvicorn's plain text;
* an unfinished head over `MAX_HEAD_BYTES`: h11 refuses it; llhttp has no such cap, so
  `HttpToolsDefended` counts the head's bytes itself (400);
* a request head trickling in (slowloris): the head gets `read_timeout_s` (408); the body gets
  `read_timeout_s` in the app (408); an idle keep-alive connection is closed after
  `idle_timeout_s` (uvicorn's `timeout_keep_alive`, armed here for new connections too);
* more than `max_connections` open connections per worker: their requests get a JSON 503 naming
  the limit and the connection is closed (uvicorn's `limit_concurrency` answers plain text and also
  counts tasks);
* a client that leaves before its answer: one log line (`connection_lost`), no trace;
* stopping (SIGTERM): an answer still being made says `connection: close`, and every connection
  of the worker closes after its answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .contract import Limits

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # h11's default cap on an unfinished event, for both parsers


class _Defences:
    """The defences both parsers share; a subclass calls `_await_head` and `_head_arrived`.

    A mixin placed before uvicorn's protocol class: its methods run first and call on to it."""

    # uvicorn's protocol classes provide these
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    app_state: dict[str, Any]
    server_state: Any
    cycle: Any
    client: tuple[str, int] | None
    timeout_keep_alive: int

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self.access_log = False  # the app logs requests when asked (--log-requests)
        self.limits: Limits = self.app_state.get("limits") or Limits()
        self._head_timer: asyncio.TimerHandle | None = None
        # uvicorn arms the idle timer only after a response: a silent new connection stays open.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive,
            self.timeout_keep_alive_handler,  # type: ignore[attr-defined]
        )
        if len(self.connections) > self.limits.max_connections:
            limit = self.limits.max_connections
            logger.warning("max_connections=%d are open: a new one gets 503", limit)
            self.app = _over_capacity(limit)

    def _await_head(self) -> None:
        """A request has begun: its head must be complete within `read_timeout_s`."""
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(self.limits.read_timeout_s, self._head_late)

    def _head_arrived(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            limit = self.limits.read_timeout_s
            message = f"the request head did not arrive within read_timeout_s={limit}"
            self._send_raw(408, "Request Timeout", message)

    def send_400_response(self, msg: str) -> None:
        message = (
            "the request is not valid HTTP/1.1 (e.g. a Content-Length that is not one integer, "
            f"conflicting Content-Length headers, a bad header line, or a head over "
            f"{MAX_HEAD_BYTES // 1024} KiB)"
        )
        self._send_raw(400, "Bad Request", message)

    def _send_raw(self, status: int, reason: str, message: str) -> None:
        """An error answer outside the parser's state (it has no request to answer), then close."""
        self._head_arrived()
        body = json.dumps({"error": message}).encode()
        head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        self.transport.write(head.encode() + body)
        self.transport.close()

    def shutdown(self) -> None:
        self.server_state.stopping = True
        super().shutdown()  # type: ignore[misc]

    def on_response_complete(self) -> None:
        """Stopping: close after each answer, on every connection of this worker.

        uvicorn's own `shutdown` only covers the connections open when it ran; with several
        workers some kept being served until the 20 s grace ran out (bench_endpoint.py)."""
        super().on_response_complete()  # type: ignore[misc]
        if getattr(self.server_state, "stopping", False) and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        if self.cycle is not None and not self.cycle.response_complete:
            scope = self.cycle.scope
            logger.info(
                "client %s left before its answer to %s %s",
                "{}:{}".format(*self.client) if self.client else "?",
                scope["method"],
                scope["path"],
            )
        super().connection_lost(exc)  # type: ignore[misc]


class HttpToolsDefended(_Defences, HttpToolsProtocol):
    """llhttp's callbacks say when a head begins and ends; the head's size is counted here."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        head_before = self._head_timer is not None
        super().data_received(data)  # the parser calls on_message_begin / on_headers_complete
        # Only reads that were all head count (one that begins a head does not): the cap holds
        # within one read's size.
        if head_before and self._head_timer is not None and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                logger.warning("a request head over %d bytes: 400", MAX_HEAD_BYTES)
                self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._await_head()

    def on_headers_complete(self) -> None:
        self._head_arrived()
        super().on_headers_complete()


class H11Defended(_Defences, H11Protocol):
    """h11 has no callbacks: after each read, a head is awaited while h11 waits for one."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._await_head()
        else:
            self._head_arrived()

    def shutdown(self) -> None:
        """h11 says `connection: close` in an answer only when the request asked for it."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.scope["headers"].append((b"connection", b"close"))
        super().shutdown()


PROTOCOLS: dict[str, type[asyncio.Protocol]] = {
    "httptools": HttpToolsDefended,
    "h11": H11Defended,
}


def _over_capacity(max_connections: int) -> Any:
    body = json.dumps(
        {"error": f"the server has max_connections={max_connections} open: retry later"}
    ).encode()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
