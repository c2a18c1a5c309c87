"""A real local HTTP server (aiohttp, on the test's event loop) that records every request
and answers from a script — for the webhook and the Supabase REST tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive, as HTTP headers are
    body: bytes


Handler = Callable[[Recorded], Awaitable[web.StreamResponse] | web.StreamResponse]


@dataclass
class RecordingServer:
    """``handler(recorded)`` answers; every request is kept in ``requests``."""

    handler: Handler
    requests: list[Recorded] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def start(self) -> RecordingServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        rec = Recorded(request.method, request.path, dict(request.query),
                       CIMultiDict(request.headers), await request.read())
        self.requests.append(rec)
        async with self._arrived:
            self._arrived.notify_all()
        out = self.handler(rec)
        if not isinstance(out, web.StreamResponse):
            out = await out
        return out

    async def wait_for(self, n: int, timeout_s: float = 10.0) -> None:
        """Until ``n`` requests have arrived (deadline, no sleeps)."""
        async def until() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= n)

        await asyncio.wait_for(until(), timeout_s)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.json_response(data, status=status, headers=headers)
