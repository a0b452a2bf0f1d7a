"""Uploading a dataset from the browser: ``POST /datasets`` (multipart), streamed to a temporary file and
then sent to the platform with the signed-in key.

The body is read part by part, never whole into memory, and the CSRF token must be its first part, so a
forged upload is refused before a byte of its file is read. A script-driven upload (the datasets page's
form, with its progress bar) asks for JSON; a plain form post gets a redirect or the page with its error.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from aiohttp import BodyPartReader, web

import lepton_ai as la
from lepton_ai.datasets import SUFFIX_FORMATS
from lepton_console import i18n

if TYPE_CHECKING:
    from lepton_console.web import Console

CHUNK = 1 << 16
#: Longest dataset name or CSRF token read from the form.
MAX_FIELD = 512
FILE_FIELD = "file"
NAME_FIELD = "name"


class UploadError(Exception):
    """An upload refused before it reached the platform: the HTTP status and the message's catalogue key."""

    def __init__(self, status: int, key: str, **fields: object) -> None:
        super().__init__(key)
        self.status, self.key, self.fields = status, key, fields


def add_routes(console: Console) -> None:
    """``POST /datasets``: one upload (the form is on the datasets page)."""

    async def upload(request: web.Request) -> web.StreamResponse:
        return await receive(console, request)

    console.app.router.add_post("/datasets", upload)


def _safe_filename(filename: str) -> str:
    """The browser's file name reduced to a plain one (no directories, only ``[A-Za-z0-9._-]``); clients
    that percent-encode it (browsers escape quotes, aiohttp escapes more) are decoded first."""
    base = Path(unquote(filename).replace("\\", "/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")[:128]
    return cleaned or "upload"


async def _text(part: BodyPartReader) -> str:
    data = await part.read_chunk(MAX_FIELD + 1)
    if len(data) > MAX_FIELD:
        raise UploadError(400, "upload.field_too_long", field=part.name or "")
    return data.decode("utf-8", "replace").strip()


async def _store(part: BodyPartReader, directory: Path, limit: int) -> Path:
    """Writes the file part to ``directory`` under its (cleaned) name; 413 past ``limit`` bytes."""
    name = _safe_filename(part.filename or "")
    if Path(name).suffix.lower() not in SUFFIX_FORMATS:
        raise UploadError(400, "upload.format", name=name, formats=", ".join(sorted(SUFFIX_FORMATS)))
    path = directory / name
    size = 0
    with path.open("wb") as out:
        while chunk := await part.read_chunk(CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadError(413, "upload.too_large", limit=f"{limit / 1024**2:g}")
            await asyncio.to_thread(out.write, chunk)
    if size == 0:
        raise UploadError(400, "upload.empty", name=name)
    return path


async def receive(console: Console, request: web.Request) -> web.StreamResponse:
    """Takes one upload: the CSRF token (first), the optional dataset name, then the file."""
    session = console._signed_in(request)
    wants_json = "application/json" in request.headers.get("Accept", "")
    t = i18n.translator(console._lang(request))
    name = ""
    try:
        if not request.content_type.startswith("multipart/form-data"):
            raise UploadError(400, "upload.no_file")
        reader = await request.multipart()
        first = await reader.next()
        given = await _text(first) if isinstance(first, BodyPartReader) and first.name == "csrf" else ""
        if not given or not hmac.compare_digest(given.encode(), session.csrf.encode()):
            raise web.HTTPForbidden(text=t("error.csrf"), content_type="text/plain")
        with tempfile.TemporaryDirectory(prefix="lepton-console-upload-") as tmp:
            stored: Path | None = None
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise UploadError(400, "upload.no_file")
                if part.name == NAME_FIELD:
                    name = await _text(part)
                elif part.name == FILE_FIELD and stored is None:
                    stored = await _store(part, Path(tmp), console.settings.upload_max_bytes)
                else:
                    await part.release()
            if stored is None:
                raise UploadError(400, "upload.no_file")
            try:
                dataset = await asyncio.to_thread(session.client.datasets.upload, stored, name or None, progress=False)
            except la.InvalidArgument as exc:  # the platform's own words: which field, what it expected
                raise UploadError(400, "upload.refused", reason=exc.message) from None
    except UploadError as exc:
        message = t(exc.key, **exc.fields)
        if wants_json:
            return web.json_response({"error": message}, status=exc.status)
        return await console.datasets(request, exc.status, message, name)
    location = f"/datasets/{quote(dataset.name, safe='')}"
    if wants_json:
        return web.json_response(
            {
                "location": location,
                "name": dataset.name,
                "version_id": dataset.version_id,
                "rows": dataset.row_count,
                "deduplicated": dataset.deduplicated,
            }
        )
    raise web.HTTPSeeOther(location)
