"""The deployments pages: their view of a deployment, the deploy form's checks, the try-it form's parsing
(units, no platform), and the pages against the session's real platform without a browser (sign-in,
CSRF, form errors, another tenant)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from lepton.deployer.v1 import deployer_pb2
from lepton.events.v1 import events_pb2

import lepton_ai as la
from lepton_console import deployments as dep
from lepton_console import i18n
from lepton_console.sessions import Sessions
from lepton_console.settings import ConsoleSettings
from lepton_console.web import make_app
from lepton_platform.embedded import EmbeddedPlatform

PACKAGE = Path(i18n.__file__).parent
EN = i18n.translator("en")
ZH = i18n.translator("zh-CN")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def error_of(text: str, features: list[str], texts: list[str] | None = None) -> str:
    with pytest.raises(dep.FormError) as caught:
        dep.parse_rows(text, features, texts or [])
    return caught.value.text(EN)


# -- the catalogue --------------------------------------------------------------


def test_every_key_the_deployments_code_names_is_in_both_catalogues() -> None:
    source = (PACKAGE / "deployments.py").read_text()
    keys = set(re.findall(r"""FormError\(\s*["']([a-z_.]+)["']""", source))
    keys |= set(re.findall(r"""\bt\(\s*["']([a-z_.]+)["']""", source))
    keys |= {f"deployment.state.{s}" for s in dep.STATES}
    keys |= {f"deployment.strategy.{s}" for s in dep.STRATEGIES}
    keys |= {f"deployment.outcome.{s}" for s in dep.OUTCOMES}
    assert len(keys) > 30, "the patterns found too little"
    assert keys <= set(i18n.EN) and keys <= set(i18n.ZH), sorted(keys - set(i18n.EN) - set(i18n.ZH))


def test_the_templates_and_script_have_no_inline_code_and_no_html_parsing() -> None:
    for template in ("deployments.html", "deployment.html"):
        html = (PACKAGE / "templates" / template).read_text()
        assert "<script>" not in html and "style=" not in html and not re.search(r"\son[a-z]+=", html)
        assert re.findall(r"<script[^>]*>", html) in ([], ['<script src="/static/deployments.js" defer>'])
    script = (PACKAGE / "static" / "deployments.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script
    assert "textContent" in script and '"image/svg+xml"' in script


# -- what a deployment's page shows ------------------------------------------------


def rolling_out() -> deployer_pb2.DeploymentStatus:
    status = deployer_pb2.DeploymentStatus()
    d = status.deployment
    d.name, d.state, d.target_version = "api", deployer_pb2.DEPLOYMENT_STATE_ROLLING_OUT, 2
    d.lineage.model_name, d.lineage.model_version = "diabetes", 1
    d.feature_columns.extend(["age", "bmi"])
    d.text_columns.append("note")
    d.hosts.append("default")
    d.routes.add(model_version=1, weight=0.9, triton_model="t_api", triton_version="1")
    d.routes.add(model_version=2, weight=0.1, triton_model="t_api--next", triton_version="2")
    host = d.host_states.add(url="default", versions=[1, 2], ready=True)
    host.checked_at.FromDatetime(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    d.history.add(from_version=0, to_version=1, strategy="all_at_once", outcome="completed", seconds=3.25)
    d.history.add(from_version=1, to_version=3, strategy="canary", outcome="rolled_back", reason="smoke <b>test</b>")
    status.statistics.add(
        host="default", triton_version="1", ready=True, inference_count=7, execution_count=3, success_count=7,
        avg_queue_us=12.4, avg_compute_us=80.6, avg_request_us=101.0,
    )  # fmt: skip
    return status


def test_a_rolling_out_deployment_s_page_in_words() -> None:
    page = dep.DeploymentPage.of(rolling_out(), EN)
    assert (page.state, page.state_label, page.live) == ("rolling_out", "Rolling out", True)
    assert page.routes == [["1", "t_api", "1", "90%"], ["2", "t_api--next", "2", "10%"]]
    assert page.hosts == [["default", "1, 2", "Ready", "\u2013", "2025-01-02 03:04:05"]]
    assert page.history[0][1:6] == ["1", "3", "Canary", "Rolled back", "smoke <b>test</b>"]  # newest first
    assert page.history[1][1:5] == ["\u2013", "1", "All at once", "Completed"]
    assert page.stats == [["default", "1", "Ready", "7", "3", "7", "0", "12", "81", "101"]]
    assert page.columns == ["age", "bmi", "note"]
    message = json.loads(page.update().decode().removeprefix("data: "))
    assert message["state"] == "rolling_out" and message["target"] == "2" and message["version"] == "1"
    assert message["tables"]["routes"] == page.routes and message["weights"].startswith("<svg")
    chinese = dep.DeploymentPage.of(rolling_out(), ZH)
    assert chinese.state_label == "发布中" and chinese.history[0][3] == "金丝雀发布"


def test_a_ready_deployment_is_not_live_and_its_row_names_what_it_serves() -> None:
    status = rolling_out()
    status.deployment.state = deployer_pb2.DEPLOYMENT_STATE_READY
    assert not dep.DeploymentPage.of(status, EN).live
    row = dep.deployment_row(status.deployment)
    assert (row.name, row.model_name, row.versions, row.state, row.hosts) == (
        "api", "diabetes", "1, 2", "ready", "default"
    )  # fmt: skip
    del status.deployment.routes[:]
    assert dep.deployment_row(status.deployment).versions == "1 → 2"
    assert dep.state_name(99) == "unspecified"


def test_the_weights_are_a_labelled_stacked_bar_that_escapes_what_it_shows() -> None:
    svg = str(dep.weights_svg("w<", [(1, 0.75), (2, 0.25)], EN))
    assert svg.startswith('<svg class="chart weights" id="w&lt;" role="img"')
    assert 'xmlns="http://www.w3.org/2000/svg"' in svg and "<title>Shares of traffic by model version</title>" in svg
    assert "Routed traffic: v1 75%, v2 25%." in svg
    assert svg.count('<rect class="share') == 2 and "style=" not in svg
    widths = [float(w) for w in re.findall(r'<rect class="share[^"]*" x="[^"]+" y="2" width="([^"]+)"', svg)]
    assert widths == [479.0, 159.0]  # 3:1 of 640, a pixel apart
    assert dep.weights_svg("w", [], EN) is None and dep.weights_svg("w", [(1, 0.0)], EN) is None


def event(name: str, subject: str, deployment: str = "") -> la.PlatformEvent:
    data = events_pb2.DeploymentReady()
    data.lineage.deployment = deployment
    return la.PlatformEvent(
        id="e1", type=f"ai.lepton.{name}.v1", name=name, source="/lepton/deployer", time=datetime.now(UTC),
        subject=subject, trace_id="", tenant="t", data=data,
    )  # fmt: skip


def test_a_page_follows_only_its_own_deployment_s_events() -> None:
    assert dep.concerns(event("deployment.ready", "api"), "api")
    assert dep.concerns(event("deployment.rollout.started", "", "api"), "api")
    assert not dep.concerns(event("deployment.ready", "api-2"), "api")
    assert not dep.concerns(event("training.completed", "api"), "api")


class QueueStream:
    """Stands in for the SDK's event stream: events put on a queue, None ends it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[la.PlatformEvent | None] = asyncio.Queue()
        self.closed = False

    async def __aenter__(self) -> QueueStream:
        return self

    def __aiter__(self) -> QueueStream:
        return self

    async def __anext__(self) -> la.PlatformEvent:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


async def test_a_moving_rollout_s_stream_ticks_between_events_and_ends_with_them() -> None:
    inner = QueueStream()
    moving = [True]
    ticking = dep.Ticking(inner, "api", lambda: moving[0])  # type: ignore[arg-type]
    async with asyncio.timeout(30):
        await ticking.__aenter__()
        events = ticking.__aiter__()
        first = await events.__anext__()
        assert (first.name, first.subject) == (dep.TICK, "api")  # nothing from the platform: a tick
        assert dep.concerns(first, "api") is False  # a tick is no platform event
        await inner.queue.put(event("deployment.ready", "api"))
        while (got := await events.__anext__()).name == dep.TICK:
            pass
        assert got.name == "deployment.ready"
        moving[0] = False
        await inner.queue.put(None)
        with pytest.raises(StopAsyncIteration):
            while (await events.__anext__()).name == dep.TICK:
                pass
    ticking.close()
    await ticking.aclose()
    assert inner.closed


# -- the deploy form ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "asked"),
    [
        ({"name": "api", "model": "m", "version": "3"}, dep.DeployAsk("api", "m", 3, "", "")),
        ({"name": " api ", "model": "m", "version": "champion", "strategy": "canary"},
         dep.DeployAsk("api", "m", 0, "champion", "canary")),
        ({"name": "api", "model": "m", "version": "", "strategy": "all_at_once"}, dep.DeployAsk("api", "m", 0, "", "")),
    ],
)  # fmt: skip
def test_the_deploy_form_takes_a_version_number_an_alias_or_nothing(form: dict[str, str], asked: dep.DeployAsk) -> None:
    assert dep.deploy_ask(form) == asked


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"name": "", "model": "m"}, "Give the deployment a name."),
        ({"name": "My API", "model": "m"}, "“My API” is not a valid name"),
        ({"name": "a--b", "model": "m"}, "“a--b” is not a valid name"),
        ({"name": "api", "model": ""}, "Choose a model."),
        ({"name": "api", "model": "M!"}, "“M!” is not a model name."),
        ({"name": "api", "model": "m", "version": "-1"}, "“-1” is neither a version number"),
        ({"name": "api", "model": "m", "version": "0"}, "“0” is neither a version number"),
        ({"name": "api", "model": "m", "version": "v 2"}, "“v 2” is neither"),
        ({"name": "api", "model": "m", "strategy": "blue_green"}, "Choose “All at once” or “Canary”."),
    ],
)
def test_the_deploy_form_says_which_value_is_wrong(form: dict[str, str], message: str) -> None:
    with pytest.raises(dep.FormError) as caught:
        dep.deploy_ask(form)
    assert message in caught.value.text(EN)
    assert caught.value.text(ZH)  # and in Chinese


# -- the try-it form ------------------------------------------------------------------------


def test_csv_rows_become_the_deployment_s_columns_in_order() -> None:
    frame = dep.parse_rows('bmi,extra,age,note\n1.5,x,30,"a, b"\n\n2,y,-4e1,\n', ["age", "bmi"], ["note"])
    assert frame.columns == ["age", "bmi", "note"]
    assert frame.schema == {"age": pl.Float64, "bmi": pl.Float64, "note": pl.String}
    assert frame.rows() == [(30.0, 1.5, "a, b"), (-40.0, 2.0, "")]


def test_json_rows_become_the_deployment_s_columns_in_order() -> None:
    frame = dep.parse_rows('[{"age": 1, "bmi": 2.5, "note": "hi"}, {"bmi": "3", "age": 4, "note": null}]',
                           ["age", "bmi"], ["note"])  # fmt: skip
    assert frame.rows() == [(1.0, 2.5, "hi"), (4.0, 3.0, "")]
    assert dep.parse_rows('{"age": 1, "bmi": 2}', ["age", "bmi"], []).rows() == [(1.0, 2.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   \n", "Paste some rows first: a CSV header row and rows, or a JSON array of objects."),
        ("age,bmi\n", "There are no rows under the header."),
        ("age,sex\n1,2\n", "The header row lacks the column(s) bmi; the deployment takes age, bmi."),
        ("age,bmi\n1,2\n3\n", "Line 3 has 1 values, but the header row has 2."),
        ("age,bmi\n1,2\n3,abc\n", "Line 3, column bmi: “abc” is not a number."),
        ("age,bmi\n1,\n", "Line 2, column bmi: “” is not a number."),
        ("age,bmi\n1,inf\n", "Line 2, column bmi: “inf” is not a number."),
        (
            '[{"age": 1, "bmi": 2},\n {"age": 1 "bmi": 2}]',
            "Not valid JSON at line 2, column 12: Expecting ',' delimiter.",
        ),
        ('"age"', "The header row lacks the column(s) bmi; the deployment takes age, bmi."),
        ("[1, 2]", "Row 1 is not an object of column names and values."),
        ('[{"age": 1, "bmi": 2}, {"age": 1}]', "Row 2 lacks the column(s) bmi."),
        ('[{"age": true, "bmi": 2}]', "Row 1, column age: “true” is not a number."),
        ('[{"age": [1], "bmi": 2}]', "Row 1, column age: “[1]” is not a number."),
        ("[]", "There are no rows under the header."),
    ],
)
def test_bad_rows_are_refused_saying_where_and_what(text: str, message: str) -> None:
    assert error_of(text, ["age", "bmi"]).startswith(message)


def test_text_columns_take_no_objects_and_json_must_be_rows() -> None:
    assert error_of('[{"note": {"a": 1}}]', [], ["note"]) == "Row 1, column note: a text value was expected."
    assert error_of("3", ["age"]) == "The header row lacks the column(s) age; the deployment takes age."
    assert error_of('{"age": 1}', ["age", "bmi"]) == "Row 1 lacks the column(s) bmi."


def test_the_try_form_takes_at_most_its_size_and_rows() -> None:
    many = "age\n" + "1\n" * (dep.MAX_TRY_ROWS + 1)
    assert error_of(many, ["age"]) == f"More than {dep.MAX_TRY_ROWS} rows; this form sends at most 1000 at once."
    assert len(dep.parse_rows("age\n" + "1\n" * dep.MAX_TRY_ROWS, ["age"], [])) == dep.MAX_TRY_ROWS
    rows = json.dumps([{"age": 1}] * (dep.MAX_TRY_ROWS + 1))
    assert error_of(rows, ["age"]) == "1001 rows is more than the 1000 this form sends at once."
    big = "age\n" + "1.000000000\n" * 7000
    assert error_of(big, ["age"]) == "That is more than 64 KiB; send fewer rows."
    assert "第 3 行" in dep.FormError("try.error.width", where=dep._line(3), count=1, expected=2).text(ZH)


def test_predictions_sit_beside_their_rows() -> None:
    frame = dep.parse_rows("age,bmi\n1.25,2\n3,4\n", ["age", "bmi"], [])
    one = dep.tried(frame, [0.5, 1.5])
    assert one.lines == [(["1.25", "2"], [0.5]), (["3", "4"], [1.5])]
    two = dep.tried(frame, [0.1, 0.9, 0.7, 0.3])  # two outputs a row (class probabilities)
    assert two.predictions == [[0.1, 0.9], [0.7, 0.3]]


# -- against the session's platform, without a browser --------------------------------------


@pytest_asyncio.fixture
async def console(platform: EmbeddedPlatform) -> AsyncIterator[TestClient[object, object]]:
    app = make_app(ConsoleSettings(platform_url=platform.url), Sessions(idle_s=3600.0))
    async with TestClient(TestServer(app)) as client:
        yield client


async def signed_in(console: TestClient[object, object], key: str) -> str:
    """Signs in with ``key``; the session's CSRF token."""
    page = await console.get("/signin")
    token = CSRF.search(await page.text())
    assert token is not None
    answer = await console.post("/signin", data={"csrf": token.group(1), "key": key}, allow_redirects=False)
    assert answer.status == 303
    listing = await console.get("/deployments")
    assert listing.status == 200
    found = CSRF.search(await listing.text())
    assert found is not None
    return found.group(1)


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_the_pages_need_a_session_a_csrf_token_and_say_what_is_wrong(
    console: TestClient[object, object], platform: EmbeddedPlatform
) -> None:
    for path in ("/deployments", "/deployments/anything"):
        answer = await console.get(path, allow_redirects=False)
        assert (answer.status, answer.headers["Location"]) == (303, "/signin"), path
    assert (await console.get("/deployments/anything/stream")).status == 401

    csrf = await signed_in(console, platform.api_key)
    page = await console.get("/deployments", headers={"Accept-Language": "en"})
    html = await page.text()
    assert '<form id="deploy" class="deploy-form" method="post" action="/deployments">' in html
    assert '<label for="deploy-name">Deployment name</label>' in html and "style=" not in html
    assert platform.api_key not in html

    for path in ("/deployments", "/deployments/anything/rollback", "/deployments/anything/predict"):
        assert (await console.post(path, data={"name": "x", "model": "y"})).status == 403, path
        assert (await console.post(path, data={"csrf": "x" * 43})).status == 403, path

    typed = {"csrf": csrf, "name": "Bad Name<script>", "model": "some-model", "version": "champion"}
    refused = await console.post("/deployments", data=typed)
    html = await refused.text()
    assert refused.status == 400 and 'id="deploy-error"' in html
    assert "“Bad Name&lt;script&gt;” is not a valid name" in html and "<script>" not in html
    assert 'value="Bad Name&lt;script&gt;"' in html and 'value="champion"' in html  # kept

    # A model the tenant does not have: the platform's reason, the form kept.
    missing = await console.post("/deployments", data=typed | {"name": "console-unit-none", "model": "no-such-model"})
    html = await missing.text()
    assert missing.status == 400 and "The platform refused the deployment:" in html
    assert 'value="console-unit-none"' in html
    assert await _absent(platform, "console-unit-none")

    # Nothing of that name: 404, for the page, its stream and its forms.
    assert (await console.get("/deployments/no-such-deployment")).status == 404
    assert (await console.get("/deployments/no-such-deployment/stream")).status == 404
    for action in ("rollback", "predict"):
        answer = await console.post(f"/deployments/no-such-deployment/{action}", data={"csrf": csrf, "rows": "a\n1"})
        assert answer.status == 404, action


async def _absent(platform: EmbeddedPlatform, name: str) -> bool:
    def look() -> bool:
        with la.Client(platform.api_key, platform.url) as client:
            return client.deployments.get_or_none(name) is None

    return await asyncio.to_thread(look)
