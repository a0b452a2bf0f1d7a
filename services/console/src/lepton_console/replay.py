"""The tenant's past events, replayed for a page that renders once: bounded in time, so a slow replay
gives a page with less on it rather than a slow page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime

import lepton_ai as la


async def replayed(
    client: la.Client, pattern: str, since: datetime, total_s: float, quiet_s: float | None = None
) -> AsyncGenerator[la.PlatformEvent]:
    """Events matching ``pattern`` from ``since`` on, until ``total_s`` has passed or, with ``quiet_s``, none
    came for that long (the replay has caught up with the present). Use it under ``contextlib.aclosing``, so
    a caller that stops early closes the stream at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_s
    async with client.events.subscribe(pattern, since=since) as stream:
        events = stream.__aiter__()
        while (left := deadline - loop.time()) > 0:
            try:
                yield await asyncio.wait_for(events.__anext__(), min(left, quiet_s) if quiet_s else left)
            except (TimeoutError, StopAsyncIteration):
                return
