"""Answers every area of the console gives the same way."""

from __future__ import annotations

from aiohttp import web


def redirect(location: str) -> web.Response:
    """303 See Other to a local ``location``: after a form, the browser GETs it."""
    return web.Response(status=303, headers={"Location": location})


def sign_in_first() -> web.Response:
    """What an event stream answers without a session (a page redirects to sign-in instead)."""
    return web.Response(status=401, text="sign in first", content_type="text/plain")
