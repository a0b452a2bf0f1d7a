"""The console against a real embedded platform (NATS and the services as processes, no Triton):
sign-in, the pages, the event stream, tenant isolation, and where the key may never appear."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.request
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from lepton.deployer.v1 import deployer_pb2

import lepton_ai as la
from lepton_console.sessions import Sessions
from lepton_console.settings import ConsoleSettings
from lepton_console.web import make_app
from lepton_platform.embedded import EmbeddedPlatform

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
OTHER_TENANT = "intruder"
"""The session platform's second tenant (``platform.key_for``)."""


@pytest.fixture(scope="module")
def lepton(platform: EmbeddedPlatform) -> EmbeddedPlatform:
    """The test session's platform (lepton_platform.testing), console included, with its second tenant."""
    return platform


@pytest.fixture(scope="module")
def uploaded(lepton: EmbeddedPlatform, tmp_path_factory: pytest.TempPathFactory) -> la.Dataset:
    """A small CSV uploaded through the SDK with the first tenant's key."""
    csv = tmp_path_factory.mktemp("csv") / "console-flowers.csv"
    rows = "".join(f"{20 + i % 30},{['paris', 'rome', 'oslo'][i % 3]},{i * 0.5}\n" for i in range(60))
    csv.write_text("age,city,score\n" + rows)
    with la.Client(lepton.api_key, lepton.url) as client:
        return client.datasets.upload(csv, progress=False)


@pytest.fixture
def sessions() -> Sessions:
    return Sessions(idle_s=3600.0)


@pytest_asyncio.fixture
async def console(lepton: EmbeddedPlatform, sessions: Sessions) -> AsyncIterator[TestClient[object, object]]:
    app = make_app(ConsoleSettings(platform_url=lepton.url, events_replay_s=600), sessions)
    async with TestClient(TestServer(app)) as client:
        yield client


async def csrf_of(client: TestClient[object, object], path: str) -> str:
    page = await client.get(path)
    assert page.status == 200
    match = CSRF.search(await page.text())
    assert match is not None
    return match.group(1)


async def sign_in(client: TestClient[object, object], key: str) -> ClientResponse:
    token = await csrf_of(client, "/signin")
    return await client.post("/signin", data={"csrf": token, "key": key}, allow_redirects=False)


async def test_signin_page_has_the_form_and_the_headers(console: TestClient[object, object]) -> None:
    page = await console.get("/signin", headers={"Accept-Language": "en"})
    html = await page.text()
    assert page.status == 200 and '<html lang="en">' in html
    assert '<form id="signin" method="post" action="/signin">' in html
    assert '<label for="key">API key</label>' in html and 'name="key" type="password"' in html
    assert 'id="lang-switch"' in html and '<script src="/static/console.js"' in html
    assert "<script>" not in html and "style=" not in html
    assert page.headers["Content-Security-Policy"].startswith(CSP)
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    script = await console.get("/static/console.js")
    assert script.status == 200 and script.headers["X-Content-Type-Options"] == "nosniff"
    assert "EventSource" in await script.text()


async def test_pages_need_a_session(console: TestClient[object, object]) -> None:
    for path in ("/", "/datasets", "/datasets/anything", "/events"):
        answer = await console.get(path, allow_redirects=False)
        assert (answer.status, answer.headers["Location"]) == (303, "/signin"), path
    for stream in ("/events/stream", "/jobs/stream", "/jobs/job_x/stream"):
        assert (await console.get(stream)).status == 401, stream


async def test_a_wrong_key_is_refused_and_nothing_is_kept(
    console: TestClient[object, object], sessions: Sessions
) -> None:
    answer = await sign_in(console, "not-a-real-key-" + secrets.token_urlsafe(8))
    html = await answer.text()
    assert answer.status == 401
    assert 'id="signin-error"' in html and "was not accepted" in html
    assert "lepton_session" not in answer.headers.getall("Set-Cookie", [])
    assert len(sessions) == 0 and "lepton_session" not in {c.key for c in console.session.cookie_jar}


async def test_posts_without_the_csrf_token_are_forbidden(
    console: TestClient[object, object], lepton: EmbeddedPlatform, sessions: Sessions
) -> None:
    assert (await console.post("/signin", data={"key": lepton.api_key})).status == 403
    await csrf_of(console, "/signin")  # the pre-sign-in token is a cookie now; the form must repeat it
    assert (await console.post("/signin", data={"key": lepton.api_key, "csrf": "x" * 43})).status == 403
    assert len(sessions) == 0
    assert (await sign_in(console, lepton.api_key)).status == 303
    started = {"dataset": "console-flowers", "target": "score", "algorithm": "ridge"}  # a training, if it ran
    for path, data in (("/signout", {}), ("/lang", {"lang": "zh-CN", "next": "/datasets"}), ("/jobs", started)):
        refused = await console.post(path, data=data, allow_redirects=False)
        assert refused.status == 403, path
        forged = await console.post(path, data={**data, "csrf": "forged"}, allow_redirects=False)
        assert forged.status == 403, path
    assert len(sessions) == 1 and (await console.get("/datasets")).status == 200


async def test_signed_in_the_datasets_their_detail_and_histograms_show(
    console: TestClient[object, object], lepton: EmbeddedPlatform, uploaded: la.Dataset, sessions: Sessions
) -> None:
    answer = await sign_in(console, lepton.api_key)
    assert (answer.status, answer.headers["Location"]) == (303, "/datasets")
    cookie = answer.cookies["lepton_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"]  # plain HTTP on loopback; over TLS it is Secure
    assert len(cookie.value) >= 43 and len(sessions) == 1

    page = await console.get("/datasets")
    html = await page.text()
    assert page.status == 200 and 'id="nav-datasets"' in html and 'id="nav-events"' in html
    assert 'id="signout"' in html and "Tenant default · role operator" in html
    row = re.search(r'<tr data-dataset="console-flowers">(.*?)</tr>', html, re.S)
    assert row is not None, html
    assert '<td class="num">1</td>' in row.group(1) and ">60<" in row.group(1) and ">3<" in row.group(1)
    assert 'id="datasets"' in html and 'id="dataset-search"' in html

    assert "console-flowers" in await (await console.get("/datasets", params={"q": "flow"})).text()
    miss = await (await console.get("/datasets", params={"q": "zebra"})).text()
    assert "console-flowers" not in miss and 'id="datasets-empty"' in miss

    detail = await console.get("/datasets/console-flowers")
    html = await detail.text()
    assert detail.status == 200 and uploaded.version_id in html
    assert re.search(r'<th scope="row">age</th><td><code>Int64</code>', html)
    charts = re.findall(r'<svg class="chart" id="chart-\d+" role="img"[^>]*aria-label="([^"]+)"', html)
    assert charts == ["Histogram of age", "Most frequent values of city", "Histogram of score"]
    assert html.count("<title>Histogram of") == 2 and "<desc id=" in html

    gone = await console.get("/datasets/no-such-dataset")
    assert gone.status == 404 and "Not found in your tenant." in await gone.text()


async def test_another_tenant_sees_none_of_it(
    console: TestClient[object, object], lepton: EmbeddedPlatform, uploaded: la.Dataset
) -> None:
    assert (await sign_in(console, lepton.key_for(OTHER_TENANT))).status == 303
    html = await (await console.get("/datasets")).text()
    assert f"Tenant {OTHER_TENANT}" in html and "console-flowers" not in html and uploaded.version_id not in html
    for path in ("/datasets/console-flowers", f"/datasets/{uploaded.version_id}", f"/datasets/{uploaded.id}"):
        refused = await console.get(path)
        assert refused.status == 404, path
        main = (await refused.text()).split("<main", 1)[1]  # the header's forms name the page's own path
        assert "Not found in your tenant." in main and "console-flowers" not in main and "Int64" not in main


async def test_signing_out_forgets_the_key(
    console: TestClient[object, object], lepton: EmbeddedPlatform, sessions: Sessions
) -> None:
    await sign_in(console, lepton.api_key)
    token = await csrf_of(console, "/datasets")
    answer = await console.post("/signout", data={"csrf": token}, allow_redirects=False)
    assert (answer.status, answer.headers["Location"]) == (303, "/signin")
    assert len(sessions) == 0
    assert (await console.get("/datasets", allow_redirects=False)).status == 303


async def test_the_language_switches_and_is_remembered(
    console: TestClient[object, object], lepton: EmbeddedPlatform
) -> None:
    first = await console.get("/signin", headers={"Accept-Language": "zh-TW,zh;q=0.9"})
    assert '<html lang="zh-CN">' in await first.text()
    await sign_in(console, lepton.api_key)
    token = await csrf_of(console, "/datasets")
    answer = await console.post(
        "/lang", data={"csrf": token, "lang": "zh-CN", "next": "/datasets?q=flow"}, allow_redirects=False
    )
    assert (answer.status, answer.headers["Location"]) == (303, "/datasets?q=flow")
    assert answer.cookies["lepton_lang"].value == "zh-CN" and answer.cookies["lepton_lang"]["samesite"] == "Strict"
    html = await (await console.get("/datasets", headers={"Accept-Language": "en"})).text()
    assert '<html lang="zh-CN">' in html and ">数据集</a>" in html and ">退出登录</button>" in html
    back = await console.post(
        "/lang", data={"csrf": token, "lang": "en", "next": "//evil.example"}, allow_redirects=False
    )
    assert back.headers["Location"] == "/"
    assert '<html lang="en">' in await (await console.get("/datasets")).text()


async def test_the_event_stream_tails_the_tenants_events_live(
    console: TestClient[object, object], lepton: EmbeddedPlatform, tmp_path: Path
) -> None:
    await sign_in(console, lepton.api_key)
    page = await (await console.get("/events")).text()
    assert '<ul id="events"' in page and 'id="event-filter"' in page and 'data-stream="/events/stream"' in page
    stream = await console.get("/events/stream")
    assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
    async with asyncio.timeout(30):
        while (await stream.content.readline()) != b": subscribed\n":
            pass
        csv = tmp_path / "console-live.csv"
        csv.write_text("x,y\n1,2\n3,4\n")
        with la.Client(lepton.api_key, lepton.url) as client:
            version = await asyncio.to_thread(client.datasets.upload, csv, progress=False)
        while True:
            line = (await stream.content.readline()).decode()
            if line.startswith("data: ") and json.loads(line[6:])["subject"] == version.version_id:
                event = json.loads(line[6:])
                break
    assert event["name"] == "dataset.version.created" and event["type"].startswith("ai.lepton.dataset.")

    token = await csrf_of(console, "/events")
    assert (await console.post("/signout", data={"csrf": token}, allow_redirects=False)).status == 303
    async with asyncio.timeout(10):  # signing out ends the stream its key fed
        while await stream.content.readline():
            pass
    assert stream.content.at_eof()


async def test_the_key_appears_in_no_answer(console: TestClient[object, object], lepton: EmbeddedPlatform) -> None:
    """Every answer of a whole visit, bodies, headers (Set-Cookie, Location) and URLs, is searched for the key."""
    key = lepton.api_key
    seen: list[str] = []

    def record(answer: ClientResponse, body: str) -> None:
        seen.extend([str(answer.url), body, *(f"{k}: {v}" for k, v in answer.headers.items())])
        seen.extend(f"{r.url} {dict(r.headers)}" for r in answer.history)

    answer = await sign_in(console, key)
    record(answer, await answer.text())
    wrong = await sign_in(console, key + "x")  # a near miss is not echoed back either
    record(wrong, await wrong.text())
    for path in ("/datasets", "/datasets?q=console", "/datasets/console-flowers", "/events", "/nowhere"):
        page = await console.get(path)
        record(page, await page.text())
    seen.extend(f"{c.key}={c.value}" for c in console.session.cookie_jar)
    assert seen and not [s for s in seen if key in s]


def test_lepton_up_starts_the_console_beside_the_services(lepton: EmbeddedPlatform) -> None:
    assert lepton.console_url.startswith("http://127.0.0.1:")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"{lepton.console_url}/signin", timeout=10) as reply:
        html = reply.read().decode()
        assert reply.status == 200 and reply.headers["Content-Security-Policy"].startswith(CSP)
    assert '<form id="signin"' in html


@pytest.fixture(scope="module")
def numbers(lepton: EmbeddedPlatform, tmp_path_factory: pytest.TempPathFactory) -> la.Dataset:
    """A small numeric dataset an MLP regressor trains on in a moment."""
    csv = tmp_path_factory.mktemp("csv") / "console-numbers.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i % 7},{i % 5},{(i % 7) * 2 + (i % 5)}\n" for i in range(120)))
    with la.Client(lepton.api_key, lepton.url) as client:
        return client.datasets.upload(csv, progress=False)


async def _start_mlp(
    client: la.Client, numbers: la.Dataset, **params: int
) -> tuple[asyncio.Future[la.models.Model], str]:
    """An MLP regressor's ``fit`` on ``numbers``, running on another thread, and its job's id once submitted."""
    dataset = await asyncio.to_thread(client.datasets.get, numbers.version_id)
    model = la.models.MLP(early_stopping_patience=0, **params)
    fitting = asyncio.ensure_future(asyncio.to_thread(model.fit, dataset, "y", progress=False))
    async with asyncio.timeout(30):
        while not getattr(model, "job_id", ""):
            await asyncio.sleep(0.02)
    return fitting, str(model.job_id)


async def _sse_data(stream: ClientResponse) -> AsyncIterator[dict[str, object]]:
    while line := await stream.content.readline():
        if line.startswith(b"data: "):
            yield json.loads(line[6:])


async def test_a_training_job_page_follows_its_progress_and_curve(
    console: TestClient[object, object], lepton: EmbeddedPlatform, numbers: la.Dataset
) -> None:
    await sign_in(console, lepton.api_key)
    with la.Client(lepton.api_key, lepton.url) as client:
        fitting, job_id = await _start_mlp(client, numbers, epochs=25, batch_size=16)

        stream = await console.get(f"/jobs/{job_id}/stream")
        assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        updates: list[dict[str, object]] = []
        async with asyncio.timeout(60):
            async for update in _sse_data(stream):
                updates.append(update)
                if update.get("done"):
                    break
        await fitting
    assert updates[-1]["state"] == "succeeded" and updates[-1]["state_label"] == "Succeeded"
    progress = [float(u["progress"]) for u in updates if "progress" in u]  # type: ignore[arg-type]
    assert len(set(progress)) >= 3 and progress[-1] == 1.0, progress
    curve = str(updates[-1]["curve"])
    assert curve.startswith('<svg class="chart" id="job-curve" role="img"') and "train_loss" in curve
    assert "<polyline" in curve and "25 epochs" in curve

    listing = await (await console.get("/jobs")).text()
    row = re.search(rf'<tr data-job="{job_id}">(.*?)</tr>', listing, re.S)
    assert row is not None and "mlp_regressor" in row.group(1) and "Succeeded" in row.group(1)
    assert 'id="nav-jobs"' in listing and 'aria-current="page"' in listing

    page = await (await console.get(f"/jobs/{job_id}", headers={"Accept-Language": "zh-CN"})).text()
    assert '<progress id="job-progress" max="1" value="1.0"' in page and 'for="job-progress"' in page
    assert 'id="job-curve"' in page and 'aria-label="每轮损失"' in page
    assert "data-stream=" not in page and 'id="job-cancel"' not in page  # over: nothing to follow or cancel
    assert "style=" not in page and "<script>" not in page


async def test_a_running_job_is_cancelled_from_its_page(
    console: TestClient[object, object], lepton: EmbeddedPlatform, numbers: la.Dataset
) -> None:
    await sign_in(console, lepton.api_key)
    with la.Client(lepton.api_key, lepton.url) as client:
        fitting, job_id = await _start_mlp(client, numbers, epochs=5000, batch_size=4)
        page = await (await console.get(f"/jobs/{job_id}")).text()
        assert 'id="job-cancel"' in page and f'data-stream="/jobs/{job_id}/stream"' in page
        refused = await console.post(f"/jobs/{job_id}/cancel", data={}, allow_redirects=False)
        assert refused.status == 403
        token = await csrf_of(console, f"/jobs/{job_id}")
        done = await console.post(f"/jobs/{job_id}/cancel", data={"csrf": token}, allow_redirects=False)
        assert (done.status, done.headers["Location"]) == (303, f"/jobs/{job_id}")
        with pytest.raises(la.LeptonError, match="cancelled"):
            await fitting
    page = await (await console.get(f"/jobs/{job_id}")).text()
    assert "Cancelled" in page and 'id="job-cancel"' not in page
    assert (await console.get("/jobs/no-such-job")).status == 404


@pytest.fixture(scope="module")
def two_versions(lepton: EmbeddedPlatform, numbers: la.Dataset) -> str:
    """A model of two versions (linear, evaluated with plots), named for this module alone."""
    name = f"console-model-{secrets.token_hex(3)}"
    with la.Client(lepton.api_key, lepton.url) as client:
        dataset = client.datasets.get(numbers.version_id)
        for algorithm in (la.models.LinearRegression(), la.models.Ridge()):
            algorithm.fit(dataset, "y", model_name=name, progress=False)
        assert all(v.plots for v in client.models.versions(name)), "the evaluator drew no plots"
    return name


async def test_a_model_s_versions_plots_and_promotion(
    console: TestClient[object, object], lepton: EmbeddedPlatform, two_versions: str
) -> None:
    name = two_versions
    await sign_in(console, lepton.api_key)
    listing = await (await console.get("/models")).text()
    assert 'id="nav-models"' in listing and f'<tr data-model="{name}">' in listing

    page = await (await console.get(f"/models/{name}")).text()
    assert '<table id="versions">' in page and 'data-version="1"' in page and 'data-version="2"' in page
    assert 'data-metric="r2"' in page or 'data-metric="rmse"' in page, page
    plots = re.findall(r'<img src="(/models/[^"]+/plots/[^"]+)" alt="([^"]+)"', page)
    assert plots and all(alt.startswith("Evaluation plot of version") for _, alt in plots)
    png = await console.get(plots[0][0])
    assert png.status == 200 and png.content_type == "image/png"
    assert (await png.read()).startswith(b"\x89PNG")
    assert (await console.get(f"/models/{name}/versions/1/plots/nothing")).status == 404
    assert page.count('<form class="promote"') >= 1

    forged = await console.post(f"/models/{name}/promote", data={"version": "1"}, allow_redirects=False)
    assert forged.status == 403
    token = await csrf_of(console, f"/models/{name}")
    for version in ("1", "2"):
        moved = await console.post(
            f"/models/{name}/promote", data={"csrf": token, "version": version}, allow_redirects=False
        )
        assert (moved.status, moved.headers["Location"]) == (303, f"/models/{name}")
        page = await (await console.get(f"/models/{name}")).text()
        header = re.search(rf'<th scope="col" class="num" data-version="{version}">(.*?)</th>', page, re.S)
        assert header is not None and 'class="alias champion"' in header.group(1), page
        assert page.count('class="alias champion"') == 1
    with la.Client(lepton.api_key, lepton.url) as client:
        assert client.models.get(name).aliases["champion"] == 2

    with la.Client(lepton.api_key, lepton.url) as client:
        viewer = client.keys.create("viewer", name=f"console-viewer-{secrets.token_hex(3)}")
    await sign_in(console, viewer.secret)
    token = await csrf_of(console, f"/models/{name}")
    refused = await console.post(f"/models/{name}/promote", data={"csrf": token, "version": "1"})
    html = await refused.text()
    assert refused.status == 403 and 'id="promote-error"' in html and "Not promoted:" in html
    assert '<table id="versions">' in html  # the page, with the platform's reason, not an error page
    with la.Client(lepton.api_key, lepton.url) as client:
        assert client.models.get(name).aliases["champion"] == 2

    await sign_in(console, lepton.key_for(OTHER_TENANT))
    assert name not in await (await console.get("/models")).text()
    assert (await console.get(f"/models/{name}")).status == 404
    assert (await console.get(plots[0][0])).status == 404


async def test_a_model_page_shows_intervals_decisions_and_lineage(
    console: TestClient[object, object], lepton: EmbeddedPlatform, two_versions: str
) -> None:
    name = two_versions
    with la.Client(lepton.api_key, lepton.url) as client:
        v2 = client.models.version(name, 2)
        graph = client.models.lineage(name, 2)
        (evaluation,) = [e for e in client.models.evaluations(name, 2) if e.evaluation_id == v2.lineage.evaluation_id]
    await sign_in(console, lepton.api_key)
    page = await (await console.get(f"/models/{name}?lineage=2")).text()

    intervals = re.search(r'<tr id="intervals">(.*?)</tr>', page, re.S)
    assert intervals is not None, page
    low, high = (f"{x:.4g}" for x in (evaluation.ci_low, evaluation.ci_high))
    assert f"{evaluation.headline_metric} [{low}, {high}]" in intervals.group(1)

    # The evaluator compared version 2 with the champion of its day; the page says what it decided and why.
    decision = re.search(r'<tr data-version="2">(.*?)</tr>', page, re.S)
    assert decision is not None, page
    assert re.search(r'class="decision decision-(promote|keep)"', decision.group(1))
    assert re.search(r'<ul class="reasons"><li>.+?</li>', decision.group(1))

    assert '<svg class="graph" id="model-lineage" role="img"' in page
    assert 'aria-describedby="model-lineage-desc"' in page and '<desc id="model-lineage-desc">' in page
    for node in (v2.lineage.dataset_version_id, v2.lineage.training_job_id, f"{name}:v2", evaluation.evaluation_id):
        assert f'data-node="{node}"' in page, node
    assert f'<a href="/jobs/{v2.lineage.training_job_id}">' in page
    assert len(graph.datasets) >= 1 and f'<a href="/datasets/{graph.datasets[0].dataset_name}">' in page
    assert (await console.get(f"/models/{name}?lineage=99")).status == 404


async def test_a_dataset_page_shows_its_recipe_lineage_and_validation_report(
    console: TestClient[object, object], lepton: EmbeddedPlatform, tmp_path: Path
) -> None:
    name = f"console-lineage-{secrets.token_hex(3)}"
    csv = tmp_path / "people.csv"
    csv.write_text("age,income\n" + "".join(f"{15 + i},{100 * i}\n" for i in range(30)))
    with la.Client(lepton.api_key, lepton.url) as client:
        raw = client.datasets.upload(csv, name, progress=False)
        scaled = raw.apply([{"op": "standardize", "columns": ["income"]}])
        client.datasets.set_rules(name, [{"kind": "range", "column": "age", "min": 18}])
        viewer = client.keys.create("viewer", name=f"console-viewer-{secrets.token_hex(3)}")
    await sign_in(console, lepton.api_key)
    page = await (await console.get(f"/datasets/{name}")).text()
    assert '<svg class="graph" id="dataset-lineage" role="img"' in page
    assert f'data-node="{raw.version_id}"' in page and f'data-node="{scaled.version_id}"' in page
    assert "recipe: standardize" in page and page.count('<path class="edge"') == 1
    violations = re.search(r'<table id="violations">(.*?)</table>', page, re.S)
    assert violations is not None, page
    assert "range" in violations.group(1) and ">age<" in violations.group(1)

    await sign_in(console, viewer.secret)  # a viewer may read the dataset, not run its checks
    page = await (await console.get(f"/datasets/{name}")).text()
    assert 'id="validation-refused"' in page and 'data-node="' in page


async def test_another_tenant_finds_none_of_the_first_tenant_s_objects_on_any_page(
    console: TestClient[object, object], lepton: EmbeddedPlatform, two_versions: str, uploaded: la.Dataset
) -> None:
    """Every page, list and stream of the console, read with the intruder tenant's key, about objects of
    the first tenant: a dataset, a training job and its trace, a model with plots, a deployment."""
    name = two_versions
    with la.Client(lepton.api_key, lepton.url) as client:
        version = client.models.version(name, 1)
        job_id = version.lineage.training_job_id
        deployment = f"{name}-d"
        client.deployments.deploy(deployment, name, 1)
        with client.events.subscribe("training.completed", since=timedelta(hours=1)) as events:
            trace = next(e.trace_id for e in events if e.subject == job_id)
    marks = (name, deployment, job_id, uploaded.name, uploaded.version_id, trace)
    await sign_in(console, lepton.key_for(OTHER_TENANT))
    for listing in ("/datasets", "/jobs", "/models", "/deployments", "/monitoring", "/events"):
        page = await console.get(listing)
        html = await page.text()
        assert page.status == 200 and not [m for m in marks if m in html], listing
    plot = version.plots[0]
    for path in (
        f"/datasets/{uploaded.name}",
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/stream",
        f"/models/{name}",
        f"/models/{name}?lineage=1",
        f"/models/{name}/versions/1/plots/{plot}",
        f"/deployments/{deployment}",
        f"/deployments/{deployment}/stream",
        f"/monitoring/{deployment}",
        f"/monitoring/{deployment}/stream",
        f"/traces/{trace}",
    ):
        answer = await console.get(path)
        assert answer.status == 404, path
        assert not [m for m in marks if m in await answer.text() and m not in path], path
    token = await csrf_of(console, "/jobs")
    for path, form in (
        (f"/jobs/{job_id}/cancel", {}),
        (f"/models/{name}/promote", {"version": "1"}),
        (f"/deployments/{deployment}/rollback", {}),
        (f"/deployments/{deployment}/predict", {"rows": "x,y\n1,2\n"}),
    ):
        answer = await console.post(path, data={"csrf": token, **form}, allow_redirects=False)
        assert answer.status == 404, (path, answer.status)
    with la.Client(lepton.api_key, lepton.url) as client:
        assert client.deployments.get(deployment).state == deployer_pb2.DEPLOYMENT_STATE_READY
        client.deployments.delete(deployment)
