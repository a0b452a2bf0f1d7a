"""Signed-in sessions: a random id in a cookie, the API key only in this process's memory.

A session is forgotten on sign-out or after ``idle_s`` unused; forgetting closes its SDK
client and ends its event streams, so the key stops being used at once.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import lepton_ai as la

#: The cookie holding the session id; the id is 256 random bits.
COOKIE = "lepton_session"
ID_BYTES = 32


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class Session:
    """One signed-in person: the SDK client made with their key, who the platform says they are, and the
    token every form they post must carry."""

    id: str
    client: la.Client
    principal: la.Principal
    csrf: str
    last_used: float
    streams: set[Closable] = field(default_factory=set)


class Sessions:
    """The console's sessions, by id. ``clock`` is injectable so expiry is testable without waiting."""

    def __init__(self, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._by_id: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, client: la.Client, principal: la.Principal) -> Session:
        """A new session for a key the platform accepted (``principal`` is its WhoAmI)."""
        self._sweep()
        session = Session(
            id=secrets.token_urlsafe(ID_BYTES),
            client=client,
            principal=principal,
            csrf=secrets.token_urlsafe(ID_BYTES),
            last_used=self._clock(),
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session ``session_id`` names (its idle time restarts), or None."""
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is None:
            return None
        now = self._clock()
        if now - session.last_used > self.idle_s:
            self.forget(session_id)
            return None
        session.last_used = now
        return session

    def forget(self, session_id: str) -> None:
        """Drops the session and its key; its event streams end."""
        session = self._by_id.pop(session_id, None)
        if session is None:
            return
        for stream in list(session.streams):
            with contextlib.suppress(Exception):
                stream.close()
        session.streams.clear()
        with contextlib.suppress(Exception):
            session.client.close()

    def forget_all(self) -> None:
        for session_id in list(self._by_id):
            self.forget(session_id)

    def _sweep(self) -> None:
        now = self._clock()
        for session_id, session in list(self._by_id.items()):
            if now - session.last_used > self.idle_s:
                self.forget(session_id)
