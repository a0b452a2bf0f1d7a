"""The console's deployments pages in a real browser (Debian's headless Chromium, driven by Playwright)
against the session's platform, Triton included: promote a version, deploy it from the deployments
page's form, watch its page reach ready and a canary rollout move its weights without reloading, see
its hosts, routes and Triton statistics, send rows through the try-it form, roll back, and axe-core
on both pages in both languages. Screenshots go where tests/test_console_e2e.py puts its own.
"""

from __future__ import annotations

import io
import secrets
import threading

import numpy as np
import polars as pl
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sklearn.datasets import load_diabetes

import lepton_ai as la
from lepton_platform.demo import PipelineResult
from lepton_platform.embedded import EmbeddedPlatform
from tests.test_console_e2e import VIEWPORT, assert_accessible, context, shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

__all__ = ["context"]  # the fixture, imported to be used here

#: Long enough for Triton to load a model (and a canary's two steps) on a busy machine.
ROLLOUT_MS = 180_000


def _fit(platform: EmbeddedPlatform, pipeline: PipelineResult, model: la.models.Model, name: str) -> None:
    """``model.fit`` on a thread of its own (Playwright's sync API holds this thread's event loop)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            with la.Client(platform.api_key, platform.url) as client:
                dataset = client.datasets.get(pipeline.dataset_version.version_id)
                model.fit(dataset, pipeline.job.target, model_name=name, progress=False)
        except BaseException as exc:  # reported below, not lost on the thread
            failed.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(180)
    assert not thread.is_alive() and not failed, failed


def diabetes_rows(columns: list[str], n: int) -> pl.DataFrame:
    """``n`` rows of the data the session pipeline trained on, in the deployment's columns."""
    frame = pl.from_pandas(load_diabetes(as_frame=True).frame).drop("target")
    return frame.select(columns).head(n)


def state(page: Page) -> str:
    return page.locator("#deployment-state").inner_text()


def test_deploy_follow_try_and_roll_back_a_deployment(
    platform: EmbeddedPlatform, context: BrowserContext, browser: Browser, pipeline_in_thread: PipelineResult
) -> None:
    model_name = f"console-model-{secrets.token_hex(3)}"
    name = f"console-dep-{secrets.token_hex(3)}"
    for model in (la.models.LinearRegression(), la.models.Ridge()):
        _fit(platform, pipeline_in_thread, model, model_name)
    client = la.Client(platform.api_key, platform.url)
    try:
        page = context.new_page()
        sign_in(page, platform, platform.api_key)

        # Promote version 1 on the model's page (keyboard alone), then deploy "champion" from the form.
        page.goto(f"{platform.console_url}/models/{model_name}")
        promote = page.locator("form.promote").filter(has=page.locator('input[name=version][value="1"]'))
        if promote.count():  # else the registry made the first version champion already
            promote.locator("button").focus()
            page.keyboard.press("Enter")
        expect(page.locator('#versions th[data-version="1"] .champion')).to_be_visible()

        page.locator("#nav-deployments").click()
        expect(page.locator("#deploy")).to_be_visible()
        page.locator("#deploy-name").fill("Not A Name")
        page.locator("#deploy-model").select_option(model_name)
        page.locator("#deploy-version").fill("champion")
        with page.expect_response(lambda r: r.request.method == "POST") as refused:
            page.locator("#deploy-submit").click()
        assert refused.value.status == 400
        expect(page.locator("#deploy-error")).to_contain_text("“Not A Name” is not a valid name")
        expect(page.locator("#deploy-name")).to_have_value("Not A Name")  # what was typed is kept
        expect(page.locator("#deploy-version")).to_have_value("champion")
        page.locator("#deploy-name").fill(name)
        page.locator("#deploy-submit").click()

        # The deployment's page follows the rollout to ready without reloading.
        expect(page).to_have_url(f"{platform.console_url}/deployments/{name}")
        page.evaluate("window.sameDocument = true")  # gone if the page reloads
        expect(page.locator("#deployment-state")).to_have_text("Ready", timeout=ROLLOUT_MS)
        assert page.evaluate("window.sameDocument") is True
        expect(page.locator("#deployment-version")).to_have_text("1")
        expect(page.locator("#deployment-model a")).to_have_attribute("href", f"/models/{model_name}")
        expect(page.locator("#routes tbody tr")).to_have_count(1)
        expect(page.locator("#routes tbody tr")).to_contain_text("100%")
        expect(page.locator("#hosts tbody tr").first).to_contain_text("Ready")
        expect(page.locator("#history tbody tr").first).to_contain_text("Completed")
        expect(page.locator("svg.chart#deployment-weights[role=img] rect.share")).to_have_count(1)

        # Nothing to roll back to yet: the platform's reason, on the same page.
        with page.expect_response(lambda r: r.url.endswith("/rollback")) as answer:
            page.locator("#rollback").click()
        assert answer.value.status == 409
        expect(page.locator("#rollback-error")).to_contain_text("no earlier version")

        # Try it: CSV rows in, the same predictions as the SDK's for the same rows out.
        d = client.deployments.get(name)
        columns = [*d.feature_columns, *d.text_columns]
        expect(page.locator("#try-columns")).to_have_text(",".join(columns))
        placeholder = page.locator("#try-rows").get_attribute("placeholder") or ""
        assert placeholder.startswith(",".join(columns))
        rows = diabetes_rows(columns, 5)
        buffer = io.StringIO()
        rows.write_csv(buffer)
        page.locator("#try-rows").fill(buffer.getvalue())
        page.locator("#try-submit").click()
        cells = page.locator("#predictions td.prediction")
        expect(cells).to_have_count(5)
        shown = [float(v) for v in cells.evaluate_all("cells => cells.map(c => c.dataset.value)")]
        np.testing.assert_allclose(shown, client.deployments.predict(name, rows), rtol=1e-9)
        shot(page, "deployment-try-it")
        # Triton's statistics, read after the predictions: those requests at least.
        successes = page.locator("#stats tbody tr td:nth-child(6)").all_inner_texts()
        assert sum(int(s) for s in successes) >= 1

        # JSON rows too; then bad rows are refused with where and what, and the text is kept.
        page.locator("#try-rows").fill(rows.head(2).write_json())
        page.locator("#try-submit").click()
        expect(cells).to_have_count(2)
        bad = buffer.getvalue().splitlines()
        values = bad[2].split(",")
        values[columns.index("bmi")] = "abc"
        bad[2] = ",".join(values)
        page.locator("#try-rows").fill("\n".join(bad))
        with page.expect_response(lambda r: r.url.endswith("/predict")) as answer:
            page.locator("#try-submit").click()
        assert answer.value.status == 400
        expect(page.locator("#try-error")).to_have_text("Line 3, column bmi: “abc” is not a number.")
        expect(page.locator("#try-rows")).to_have_value("\n".join(bad))
        expect(page.locator("#predictions")).to_have_count(0)
        page.locator("#try-rows").fill("age,sex\n1,2")
        page.locator("#try-submit").click()
        expect(page.locator("#try-error")).to_contain_text("The header row lacks the column(s) bmi")

        # A canary rollout started elsewhere moves the open page's weights and state, without reloading.
        page.goto(f"{platform.console_url}/deployments/{name}")
        page.evaluate("window.sameDocument = true")
        client.deployments.deploy(name, model_name, 2, strategy="canary", canary_step_seconds=4.0, wait=False)
        expect(page.locator("#deployment-target")).to_have_text("2", timeout=ROLLOUT_MS)
        expect(page.locator("#deployment-state")).to_have_text("Rolling out")  # the same update as the target
        expect(page.locator("#deployment-weights rect.share")).to_have_count(2, timeout=ROLLOUT_MS)
        expect(page.locator("#routes tbody tr")).to_have_count(2)
        expect(page.locator("#deployment-version")).to_have_text("2", timeout=ROLLOUT_MS)
        expect(page.locator("#deployment-state")).to_have_text("Ready", timeout=ROLLOUT_MS)
        expect(page.locator("#deployment-weights rect.share")).to_have_count(1)
        expect(page.locator("#history tbody tr").first).to_contain_text("Canary")
        assert page.evaluate("window.sameDocument") is True
        expect(page.locator("#stats tbody tr").first).to_be_visible()
        shot(page, "deployment")

        # Roll back: to version 1, followed live on the page it lands on.
        page.locator("#rollback").click()
        expect(page).to_have_url(f"{platform.console_url}/deployments/{name}")
        expect(page.locator("#rollback-error")).to_have_count(0)
        expect(page.locator("#deployment-version")).to_have_text("1", timeout=ROLLOUT_MS)
        expect(page.locator("#deployment-state")).to_have_text("Ready", timeout=ROLLOUT_MS)
        assert client.deployments.get(name).lineage.model_version == 1

        page.locator("#nav-deployments").click()
        row = page.locator(f'#deployments tr[data-deployment="{name}"]')
        expect(row).to_contain_text(model_name)
        expect(row).to_contain_text("Ready")
        shot(page, "deployments")

        # POSTs without the CSRF token are refused (the browser's cookies, no token).
        for path, form in (
            ("/deployments", {"name": "csrf-less", "model": model_name}),
            (f"/deployments/{name}/rollback", {}),
            (f"/deployments/{name}/predict", {"rows": buffer.getvalue()}),
        ):
            refused_post = page.request.post(f"{platform.console_url}{path}", form=form, max_redirects=0)
            assert refused_post.status == 403, path
        assert client.deployments.get_or_none("csrf-less") is None

        # Another tenant sees none of it.
        intruder = browser.new_context(viewport=VIEWPORT, locale="en-US")  # type: ignore[arg-type]
        try:
            other = intruder.new_page()
            sign_in(other, platform, platform.key_for("intruder"))
            other.goto(f"{platform.console_url}/deployments")
            expect(other.locator("#whoami")).to_contain_text("intruder")
            assert name not in other.content() and model_name not in other.content()
            answer_404 = other.goto(f"{platform.console_url}/deployments/{name}")
            assert answer_404 is not None and answer_404.status == 404
            assert model_name not in other.content()
            stream = other.request.get(f"{platform.console_url}/deployments/{name}/stream")
            assert stream.status == 404
        finally:
            intruder.close()

        # axe-core on both pages, in English and Chinese.
        assert_accessible(browser, platform, {"deployments": "/deployments", "deployment": f"/deployments/{name}"})
    finally:
        for deployed in (name, model_name):  # the platform deploys a new model under its own name too
            if client.deployments.get_or_none(deployed) is not None:
                client.deployments.delete(deployed)
        client.close()
