"""`--token`: one shared secret protecting the page and the API when the server is exposed."""
from __future__ import annotations

import json
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "lookalike_token"
OPEN_PATHS = frozenset({"/healthz"})


class TokenMiddleware:
    """Lets a request through when it carries the token as `Authorization: Bearer`, as `?token=`
    (which also sets a cookie, so a browser opened on `/?token=...` keeps working) or as that cookie."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    def _matches(self, candidate: str | None) -> bool:
        return candidate is not None and secrets.compare_digest(candidate.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        bearer = headers.get("authorization", "")
        cookie = SimpleCookie(headers.get("cookie", "")).get(COOKIE)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        if self._matches(bearer.removeprefix("Bearer ").strip() or None) or self._matches(
            cookie.value if cookie else None
        ):
            await self.app(scope, receive, send)
        elif self._matches(query):
            await self.app(scope, receive, self._setting_cookie(send))
        else:
            await self._refuse(scope, send)

    def _setting_cookie(self, send: Send) -> Send:
        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                value = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message["headers"] = list(message.get("headers", [])) + [(b"set-cookie", value.encode())]
            await send(message)

        return send_with_cookie

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps(
            {"detail": "this server needs its token: open /?token=TOKEN or send 'Authorization: Bearer TOKEN'"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
