"""Uploading a dataset through the console against the real embedded platform: the file reaches the
platform with the signed-in key, and each refusal (no CSRF token, a format it cannot tell, a file too
large, an empty one, one the platform refuses) is specific and stores nothing."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

import lepton_ai as la
from lepton_console.sessions import Sessions
from lepton_console.settings import ConsoleSettings
from lepton_console.web import make_app
from lepton_platform.embedded import EmbeddedPlatform
from services.console.tests.test_console_platform import csrf_of, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LIMIT = 4096
"""This test console's largest upload, so a too-large file is small to make."""


@pytest_asyncio.fixture
async def console(platform: EmbeddedPlatform) -> AsyncIterator[TestClient[object, object]]:
    settings = ConsoleSettings(platform_url=platform.url, upload_max_bytes=LIMIT)
    async with TestClient(TestServer(make_app(settings, Sessions(3600.0)))) as client:
        assert (await sign_in(client, platform.api_key)).status == 303
        yield client


def form(csrf: str | None, filename: str, content: bytes, name: str = "") -> aiohttp.FormData:
    """The datasets page's form, fields in its order (the token first)."""
    data = aiohttp.FormData()
    if csrf is not None:
        data.add_field("csrf", csrf)
    data.add_field("name", name)
    data.add_field("file", content, filename=filename, content_type="text/csv")
    return data


def csv(rows: int) -> bytes:
    return ("x,y\n" + "".join(f"{i},{i * 2.5}\n" for i in range(rows))).encode()


def names(platform: EmbeddedPlatform) -> set[str]:
    with la.Client(platform.api_key, platform.url) as client:
        return {d.name for d in client.datasets.list()}


async def test_a_file_uploads_to_the_signed_in_tenant_and_the_page_follows(
    console: TestClient[object, object], platform: EmbeddedPlatform
) -> None:
    name = f"console-upload-{secrets.token_hex(3)}"
    token = await csrf_of(console, "/datasets")
    answer = await console.post(
        "/datasets", data=form(token, "flowers.csv", csv(40), name), headers={"Accept": "application/json"}
    )
    body = await answer.json()
    assert answer.status == 200, body
    assert body["location"] == f"/datasets/{name}" and body["rows"] == 40 and body["version_id"].startswith("dv_")
    with la.Client(platform.api_key, platform.url) as client:
        stored = client.datasets.get(name)
    assert (stored.version_id, stored.row_count, set(stored.columns)) == (body["version_id"], 40, {"x", "y"})

    # Without a script the form posts plainly: a redirect to the new dataset's page. Unnamed, the file names it.
    plain = await console.post("/datasets", data=form(token, "../../Spring Sales.csv", csv(5)), allow_redirects=False)
    assert (plain.status, plain.headers.get("Location")) == (303, "/datasets/spring-sales"), await plain.text()
    page = await console.get("/datasets/spring-sales")
    assert page.status == 200 and 'id="dataset-name">spring-sales<' in await page.text()


async def test_an_upload_without_the_session_s_token_is_forbidden_and_stores_nothing(
    console: TestClient[object, object], platform: EmbeddedPlatform
) -> None:
    name = f"forged-{secrets.token_hex(3)}"
    for csrf in (None, "forged-" + secrets.token_urlsafe(32)):
        answer = await console.post("/datasets", data=form(csrf, "x.csv", csv(3), name))
        assert answer.status == 403
    assert name not in names(platform)


@pytest.mark.parametrize(
    ("filename", "content", "status", "words"),
    [
        ("notes.docx", b"x,y\n1,2\n", 400, "cannot tell its format from its name; expected one of .arrow, .csv"),
        ("big.csv", csv(1000), 413, "larger than this console takes (0.00390625 MiB)"),
        ("nothing.csv", b"", 400, "nothing.csv is empty"),
        ("broken.parquet", b"this is not parquet at all", 400, "The platform refused the file:"),
    ],
)
async def test_a_refused_upload_says_why_and_stores_nothing(
    console: TestClient[object, object],
    platform: EmbeddedPlatform,
    filename: str,
    content: bytes,
    status: int,
    words: str,
) -> None:
    name = f"refused-{secrets.token_hex(3)}"
    token = await csrf_of(console, "/datasets")
    answer = await console.post(
        "/datasets", data=form(token, filename, content, name), headers={"Accept": "application/json"}
    )
    assert answer.status == status
    assert words in (await answer.json())["error"]
    page = await console.post("/datasets", data=form(token, filename, content, name))
    html = await page.text()
    assert page.status == status and 'id="upload-error"' in html and f'value="{name}"' in html
    assert name not in names(platform)
