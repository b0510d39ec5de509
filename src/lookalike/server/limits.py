"""Refuse an oversized request body from its Content-Length, before it is read or parsed."""
from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from lookalike.server.service import too_large

MULTIPART_OVERHEAD = 64 * 1024  # room for the form's other fields and part headers
DRAIN_LIMIT = 1024 * 1024 * 1024  # read and drop at most this much of a refused body


class BodyLimitMiddleware:
    """Answers 413 to any request declaring a body over `max_bytes` plus multipart overhead."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.limit = max_bytes + MULTIPART_OVERHEAD
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                await self._refuse(int(declared), send)
                await self._drain(receive, int(declared))
                return
        await self.app(scope, receive, send)

    async def _refuse(self, size: int, send: Send) -> None:
        body = json.dumps({"detail": too_large(size, self.max_bytes).message}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _drain(self, receive: Receive, declared: int) -> None:
        """Read and drop the refused body (not kept), so closing the connection does not reset it
        before the client has read the 413; bodies declared over DRAIN_LIMIT are just cut off."""
        if declared > DRAIN_LIMIT:
            return
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
