"""The web console's page timings: first render of each page against the bare SDK calls behind it.

Issue 18 asks for the "first render of any page under one second locally with the embedded
platform holding 50 datasets, 200 model versions and 20 deployments". This bench:

* starts ``EmbeddedPlatform(console=True)`` (the deployer's ``auto_deploy`` off, so the only
  deployments are the bench's) and fills it through the SDK, untimed: ``--datasets`` small CSVs
  (300 rows, four numeric columns, one categorical, a target; two get a recipe-derived version),
  ``--versions`` model versions (models of 20 versions each, ``LinearRegression`` and ``Ridge``
  taking turns, fitted from a few threads at once), ``--deployments`` deployments on the real
  Triton, and a little traffic to a few of them, so the monitoring pages have figures;
* drives Debian's headless Chromium (Playwright, ``executable_path``: no browser is downloaded),
  1366x768, signs in, and loads every page ``--repeats`` times, reading the browser's own
  timings: ``performance.getEntriesByType("navigation")`` (server time = responseStart -
  requestStart, DOM ready = domContentLoadedEventEnd, load = loadEventEnd) and the
  ``first-contentful-paint`` entry, the "first render";
* as the baseline, in the same round right after each load, times the SDK calls that fetch the
  same data (what the page's handler calls, with the same concurrency, on one long-lived client),
  and, as a diagnostic, the console's own data-fetch function for the page (its SDK calls plus
  any bounded event-stream replay), in this process, without HTTP or templates.

A route that answers 404 on its first load is reported as not available (pages being built).
Nothing is asserted: the verdict (every page's median first render < 1 s) is printed. Writes
``bench/results/console-latest.json``. Run with ``make bench-console`` (see ``bench/README.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import inspect
import math
import os
import secrets
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import _machine
import numpy as np
import polars as pl
from _table import render
from lepton.deployer.v1 import deployer_pb2
from playwright.sync_api import Page, ViewportSize, sync_playwright

import lepton_ai as la
from lepton_platform.embedded import EmbeddedPlatform

BENCH = Path(__file__).resolve().parent
DEFAULT_JSON = BENCH / "results" / "console-latest.json"
CHROMIUM = "chromium"
VIEWPORT: ViewportSize = {"width": 1366, "height": 768}
TARGET_S = 1.0
#: Versions per model; the first model gets them all (its page is the one measured).
VERSIONS_PER_MODEL = 20
ROWS = 300
CATEGORIES = ("north", "south", "east", "west")
#: Datasets that also get a recipe-derived version (a lineage on their page).
RECIPE_DATASETS = 2
RECIPE = {"steps": [{"op": "derive", "name": "x1_x2", "left": "x1", "operator": "*", "right": "x2"}]}
#: Deployments that get traffic, and how many 5-row predictions each.
TRAFFIC_DEPLOYMENTS = 3
TRAFFIC_CALLS = 30
FIT_THREADS = 4
UPLOAD_THREADS = 4
DEPLOY_TIMEOUT_S = 600.0
DEPLOY_ATTEMPTS = 3
#: How long a page may take to paint before its load is recorded without a first paint.
PAINT_WAIT_MS = 15_000
#: What the console's handlers use (services/console/src/lepton_console/{web,monitoring}.py), mirrored.
LOOKUPS = 8
RECENT_S = 300.0
ALERTS_SHOWN = 50
#: Before each load: wait (at most SETTLE_TIMEOUT_S) until the platform uses < SETTLE_IDLE_CORES.
SETTLE_IDLE_CORES = 0.1
SETTLE_WINDOW_S = 0.25
SETTLE_TIMEOUT_S = 10.0
#: The /events diagnostics: the replay is complete when the list stops growing for EVENTS_QUIET_S.
EVENTS_QUIET_S = 2.0
EVENTS_MAX_S = 60.0
AFTER_EVENTS_S = 0.5
AFTER_EVENTS_REPEATS = 3
#: How long a finished job's page waits for its replayed events (REPLAY_S of the job page's handler).
JOB_REPLAY_S = 3.0

TIMINGS_JS = """() => {
  const n = performance.getEntriesByType("navigation")[0];
  const p = performance.getEntriesByType("paint").find(e => e.name === "first-contentful-paint");
  return {
    status: n.responseStatus ?? null,
    request_start: n.requestStart, response_start: n.responseStart, response_end: n.responseEnd,
    dom_ready: n.domContentLoadedEventEnd, load: n.loadEventEnd, fcp: p ? p.startTime : null,
    transfer_size: n.transferSize,
  };
}"""
PAINTED_JS = """() => performance.getEntriesByType("paint").some(e => e.name === "first-contentful-paint")
  && performance.getEntriesByType("navigation")[0].loadEventEnd > 0"""


# --- filling the platform -------------------------------------------------------------------------------


def dataset_frame(i: int) -> pl.DataFrame:
    rng = np.random.default_rng(1000 + i)
    x = rng.normal(size=(ROWS, 4))
    segment = rng.choice(CATEGORIES, size=ROWS)
    coef = rng.normal(size=4)
    target = x @ coef + 0.1 * rng.normal(size=ROWS)
    return pl.DataFrame(
        {
            "x1": x[:, 0],
            "x2": x[:, 1],
            "x3": x[:, 2],
            "x4": x[:, 3],
            "segment": segment,
            "target": target,
        }
    )


def timed(label: str, total: int) -> Callable[[int], None]:
    """A progress line printer: ``label 12/50 (3.4 s)`` every tenth and at the end."""
    t0 = time.perf_counter()
    step = max(1, total // 10)

    def done(n: int) -> None:
        if n % step == 0 or n == total:
            print(f"  {label} {n}/{total} ({time.perf_counter() - t0:.1f} s)", flush=True)

    return done


@dataclass
class Filled:
    datasets: list[str]
    recipe_dataset: str
    models: dict[str, int]
    jobs: list[str]
    deployments: list[str]
    with_traffic: list[str]
    seconds: dict[str, float]
    deploy_retries: dict[str, list[str]]


def fill(client: la.Client, n_datasets: int, n_versions: int, n_deployments: int, token: str) -> Filled:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    names = [f"bench-{token}-ds{i:02d}" for i in range(n_datasets)]
    datasets: dict[str, la.Dataset] = {}
    progress = timed("datasets", n_datasets)
    with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        futures = {
            pool.submit(client.datasets.upload, dataset_frame(i), name, progress=False): name
            for i, name in enumerate(names)
        }
        for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
            datasets[futures[future]] = future.result()
            progress(n)
    for name in names[:RECIPE_DATASETS]:
        datasets[name].apply(RECIPE)
    print(f"  recipe-derived versions of {', '.join(names[:RECIPE_DATASETS])}", flush=True)
    seconds["datasets"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_models = max(1, math.ceil(n_versions / VERSIONS_PER_MODEL))
    model_names = [f"bench-{token}-m{m:02d}" for m in range(n_models)]
    plan = [model_names[k // VERSIONS_PER_MODEL] for k in range(n_versions)]
    # The first model keeps the most versions, whatever n_versions: its page is the one timed.
    models: dict[str, int] = {}

    def train(k: int, model_name: str) -> la.models.Model:
        estimator = la.models.LinearRegression() if k % 2 == 0 else la.models.Ridge(alpha=0.1 * (k + 1))
        dataset = datasets[names[model_names.index(model_name) % n_datasets]]
        return estimator.fit(dataset, "target", model_name=model_name, progress=False)

    progress = timed("model versions", n_versions)
    jobs: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(FIT_THREADS) as pool:
        fits = [pool.submit(train, k, model_name) for k, model_name in enumerate(plan)]
        for n, fit in enumerate(concurrent.futures.as_completed(fits), 1):
            fitted = fit.result()
            models[fitted.model_name] = max(models.get(fitted.model_name, 0), fitted.version)
            jobs.append(fitted.job_id)
            progress(n)
    seconds["models"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    deployments = [f"bench-{token}-d{j:02d}" for j in range(n_deployments)]
    target = {name: model_names[j % n_models] for j, name in enumerate(deployments)}
    retries: dict[str, list[str]] = {}

    def ask(name: str) -> None:
        """Deploy, retried (and counted) when the platform fails the call: on the loaded 2-core VM the
        deployer's NATS requests can time out, which it answers as an internal error."""
        for attempt in range(DEPLOY_ATTEMPTS):
            try:
                client.deployments.deploy(name, target[name], models[target[name]], wait=False)
                return
            except (la.InvalidArgument, la.PermissionDenied):
                raise
            except la.LeptonError as exc:
                retries.setdefault(name, []).append(f"Deploy: {type(exc).__name__}: {exc}")
                print(f"  (deploy {name} failed: {exc}; retrying)", file=sys.stderr, flush=True)
                if attempt == DEPLOY_ATTEMPTS - 1:
                    raise
                time.sleep(1.0)

    for name in deployments:
        ask(name)
    print(f"  {n_deployments} deployments asked for; waiting until ready", flush=True)
    progress = timed("deployments ready", n_deployments)
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    ready: set[str] = set()
    while len(ready) < n_deployments:
        for d in client.deployments.list():
            if d.name in target and d.name not in ready:
                if d.state == deployer_pb2.DEPLOYMENT_STATE_READY:
                    ready.add(d.name)
                    progress(len(ready))
                elif d.state == deployer_pb2.DEPLOYMENT_STATE_FAILED:
                    if len(retries.get(d.name, [])) >= DEPLOY_ATTEMPTS:
                        raise RuntimeError(f"deployment {d.name} failed: {d.error}")
                    retries.setdefault(d.name, []).append(f"FAILED: {d.error}")
                    print(f"  (deployment {d.name} failed: {d.error}; deploying again)", file=sys.stderr, flush=True)
                    ask(d.name)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n_deployments - len(ready)} deployments not ready after {DEPLOY_TIMEOUT_S:.0f} s")
        time.sleep(0.5)
    seconds["deployments"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with_traffic = deployments[:TRAFFIC_DEPLOYMENTS]
    rows = dataset_frame(0).select("x1", "x2", "x3", "x4", "segment").head(5)
    for name in with_traffic:
        for _ in range(TRAFFIC_CALLS):
            client.deployments.predict(name, rows)
    print(f"  {TRAFFIC_CALLS} predictions of 5 rows to each of {', '.join(with_traffic)}", flush=True)
    seconds["traffic"] = time.perf_counter() - t0
    return Filled(names, names[0], models, jobs, deployments, with_traffic, seconds, retries)


# --- the pages and their baselines ----------------------------------------------------------------------


def gather(*calls: Callable[[], Any], workers: int = LOOKUPS) -> list[Any]:
    """``calls`` at once on worker threads (the console's ``asyncio.gather`` of ``to_thread``)."""
    if len(calls) == 1:
        return [calls[0]()]
    with concurrent.futures.ThreadPoolExecutor(min(workers, len(calls))) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def sdk_datasets(c: la.Client) -> None:
    summaries = c.datasets.list("")
    gather(*(lambda s=s: c.datasets.get(s.latest_version_id) for s in summaries if s.latest_version_id))


def sdk_dataset(c: la.Client, name: str) -> None:
    _, latest, _ = gather(
        lambda: c.datasets.versions(name), lambda: c.datasets.get(name), lambda: c.datasets.list(name)
    )
    latest.profile()


def sdk_job(c: la.Client, job_id: str) -> None:
    c.jobs.get(job_id)


def sdk_model(c: la.Client, name: str) -> None:
    model, _, _ = gather(
        lambda: c.models.get(name), lambda: c.models.versions(name), lambda: c.models.evaluations(name)
    )
    c.models.lineage(name, model.aliases.get("champion") or model.latest_version)


def sdk_monitoring(c: la.Client) -> None:
    found = c.deployments.list()

    def row(name: str) -> None:
        try:
            gather(
                lambda: c.monitor.metrics(name, last_seconds=RECENT_S),
                lambda: c.monitor.alerts(name, firing_only=True),
            )
        except (la.NotFound, la.FailedPrecondition):
            pass

    gather(*(lambda n=d.name: row(n) for d in found))


def sdk_monitor(c: la.Client, name: str) -> None:
    c.deployments.get(name)

    def or_none(call: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            try:
                return call()
            except (la.NotFound, la.FailedPrecondition):
                return None

        return run

    gather(
        or_none(lambda: c.monitor.metrics(name, last_seconds=RECENT_S, history=True, triton=True)),
        or_none(lambda: c.monitor.drift(name)),
        or_none(lambda: c.monitor.alerts(name, limit=ALERTS_SHOWN)),
        or_none(lambda: c.monitor.rules(name)),
    )


ConsoleFetch = Callable[[la.Client], Coroutine[Any, Any, Any]]


@dataclass
class PageSpec:
    key: str
    path: str
    sdk: Callable[[la.Client], Any] | None
    sdk_what: str
    console: ConsoleFetch | None = None
    #: Each SDK call of the baseline alone (one after another, after it): what dominates it.
    parts: dict[str, Callable[[la.Client], Any]] = field(default_factory=dict)


def console_fetches(f: Filled, job_id: str, model: str) -> dict[str, ConsoleFetch]:
    """The console's own data-fetch function per page (its SDK calls and bounded event replays), a diagnostic.

    Imported here, not at the top: the deployments and monitoring modules are being written, and a
    page whose module is missing or changed is only left without this column."""
    out: dict[str, ConsoleFetch] = {}
    t = None
    try:
        from lepton_console import i18n, pages, training

        t = i18n.translator("en")
        ds, tr = f.recipe_dataset, t

        async def job_fetch(c: la.Client) -> None:
            job = training.JobView.of(await asyncio.to_thread(c.jobs.get, job_id))
            if not job.live:
                # The handler's call (web.py); its signature has changed while the console is being written.
                extra = (tr,) if len(inspect.signature(training.replay).parameters) > 4 else ()
                await training.replay(c, job, training.JobCurve(job.job_id), JOB_REPLAY_S, *extra)

        out["/datasets"] = lambda c: pages.dataset_rows(c, "", LOOKUPS)
        out["/datasets/<one>"] = lambda c: pages.dataset_detail(c, ds, tr)
        out["/jobs/<one>"] = job_fetch
        out["/models"] = pages.model_rows
        out["/models/<name>"] = lambda c: pages.model_detail(c, model, tr)
    except (ImportError, AttributeError) as exc:
        print(f"  (no console diagnostic for the first pages: {exc})", file=sys.stderr)
    try:
        from lepton_console import monitoring

        if t is not None and f.with_traffic:
            dep, tr = f.with_traffic[0], t
            out["/monitoring"] = monitoring.deployment_rows
            out["/monitoring/<one>"] = lambda c: monitoring.monitor_detail(c, dep, tr)
    except (ImportError, AttributeError) as exc:
        print(f"  (no console diagnostic for monitoring: {exc})", file=sys.stderr)
    return out


def page_specs(client: la.Client, f: Filled) -> list[PageSpec]:
    model = max(f.models, key=lambda m: (f.models[m], m))
    # A job of the model with most versions, from the middle of the fill (its events among others').
    model_jobs = [j for j in client.jobs.list(limit=1000) if j.model_name == model]
    job_id = sorted(model_jobs, key=lambda j: j.created_at.ToDatetime())[len(model_jobs) // 2].job_id
    dep = f.with_traffic[0] if f.with_traffic else (f.deployments[0] if f.deployments else "none")
    ds = f.recipe_dataset
    specs = [
        PageSpec("/signin", "/signin", None, "(static page: the floor)"),
        PageSpec("/datasets", "/datasets", sdk_datasets, "datasets.list + datasets.get per dataset (8 at once)"),
        PageSpec(
            "/datasets/<one>",
            f"/datasets/{ds}",
            lambda c: sdk_dataset(c, ds),
            "datasets.versions | get | list, then profile",
        ),
        PageSpec(
            "/jobs",
            "/jobs",
            lambda c: gather(c.jobs.list, c.datasets.list, c.jobs.algorithms),
            "jobs.list | datasets.list | jobs.algorithms",
        ),
        PageSpec("/jobs/<one>", f"/jobs/{job_id}", lambda c: sdk_job(c, job_id), "jobs.get"),
        PageSpec("/models", "/models", lambda c: c.models.list(), "models.list"),
        PageSpec(
            "/models/<name>",
            f"/models/{model}",
            lambda c: sdk_model(c, model),
            "models.get | versions | evaluations, then lineage",
        ),
        PageSpec(
            "/deployments",
            "/deployments",
            lambda c: gather(c.deployments.list, c.models.list),
            "deployments.list | models.list",
        ),
        PageSpec(
            "/deployments/<one>",
            f"/deployments/{dep}",
            lambda c: c.deployments.status(dep),
            "deployments.status",
        ),
        PageSpec(
            "/monitoring",
            "/monitoring",
            sdk_monitoring,
            "deployments.list, then monitor.metrics | alerts per deployment (8 at once)",
        ),
        PageSpec(
            "/monitoring/<one>",
            f"/monitoring/{dep}",
            lambda c: sdk_monitor(c, dep),
            "deployments.get, then monitor.metrics | drift | alerts | rules",
        ),
        PageSpec("/events", "/events", None, "(no data: the page, then its event stream)"),
    ]
    fetches = console_fetches(f, job_id, model)
    one_ds = f.datasets[-1]
    parts: dict[str, dict[str, Callable[[la.Client], Any]]] = {
        "/datasets": {
            "datasets.list": lambda c: c.datasets.list(""),
            "datasets.get (one)": lambda c: c.datasets.get(one_ds),
        },
        "/datasets/<one>": {
            "datasets.versions": lambda c: c.datasets.versions(ds),
            "datasets.get": lambda c: c.datasets.get(ds),
            "datasets.list(name)": lambda c: c.datasets.list(ds),
            "datasets.get + profile": lambda c: c.datasets.get(ds).profile(),
        },
        "/jobs": {
            "jobs.list": lambda c: c.jobs.list(),
            "datasets.list": lambda c: c.datasets.list(),
            "jobs.algorithms": lambda c: c.jobs.algorithms(),
        },
        "/models/<name>": {
            "models.get": lambda c: c.models.get(model),
            "models.versions": lambda c: c.models.versions(model),
            "models.evaluations": lambda c: c.models.evaluations(model),
            "models.get + lineage": lambda c: c.models.lineage(model, c.models.get(model).latest_version),
        },
        "/monitoring": {
            "deployments.list": lambda c: c.deployments.list(),
            "monitor.metrics (one)": lambda c: c.monitor.metrics(dep, last_seconds=RECENT_S),
            "monitor.alerts (one)": lambda c: c.monitor.alerts(dep, firing_only=True),
        },
    }
    for spec in specs:
        spec.console = fetches.get(spec.key)
        spec.parts = parts.get(spec.key, {})
    return specs


def cold_monitor_calls(client: la.Client, f: Filled) -> dict[str, float]:
    """A diagnostic: the SDK calls of a deployment's monitoring page one after another, twice, on deployments
    with traffic that no page asks about (the first ask may be the monitor's first computation). The second
    such deployment is asked for metrics without Triton's counters first, to tell the two apart."""
    out: dict[str, float] = {}
    for n, name in enumerate(f.with_traffic[1:3]):
        m = client.monitor
        calls: dict[str, Callable[[], Any]] = {"deployments.get": partial(client.deployments.get, name)}
        if n == 1:
            calls["monitor.metrics(history)"] = partial(m.metrics, name, last_seconds=RECENT_S, history=True)
        calls |= {
            "monitor.metrics(history, triton)": partial(
                m.metrics, name, last_seconds=RECENT_S, history=True, triton=True
            ),
            "monitor.drift": partial(m.drift, name),
            "monitor.alerts": partial(m.alerts, name, limit=ALERTS_SHOWN),
            "monitor.rules": partial(m.rules, name),
        }
        for rnd in ("first", "again"):
            for label, call in calls.items():
                try:
                    out[f"{name}: {label} {rnd}"] = timed_call(call)
                except (la.NotFound, la.FailedPrecondition):
                    out[f"{name}: {label} {rnd} (refused: none yet)"] = float("nan")
    if out:
        print("  monitor calls on deployments no page asked about:", flush=True)
        print("\n".join(f"    {k}: {v * 1000:.0f} ms" for k, v in out.items()), flush=True)
    return out


# --- the browser ----------------------------------------------------------------------------------------


def load(page: Page, url: str) -> dict[str, Any]:
    """One navigation to ``url``; the browser's timings (milliseconds from navigation start)."""
    response = page.goto(url, wait_until="load")
    status = response.status if response is not None else None
    try:
        page.wait_for_function(PAINTED_JS, timeout=PAINT_WAIT_MS)
    except Exception as exc:  # a page that never paints is recorded without a first paint
        print(f"    (no first paint on {url}: {type(exc).__name__})", file=sys.stderr)
    timings: dict[str, Any] = page.evaluate(TIMINGS_JS)
    timings["status"] = status
    timings["final_url"] = page.url
    return timings


class Settler:
    """Waits (at most SETTLE_TIMEOUT_S) until the platform's processes (NATS, Triton, the services, the
    console: each leads its process group) use < SETTLE_IDLE_CORES, so a page does not pay for the work
    the one before it left behind (the monitor reading prediction logs, an event replay)."""

    def __init__(self, pgids: list[int]) -> None:
        self.pgids = set(pgids)

    def settle(self) -> float:
        return _machine.settle(self.pgids, SETTLE_IDLE_CORES, SETTLE_WINDOW_S, SETTLE_TIMEOUT_S)


def events_replay(page: Page, base: str, settler: Settler) -> dict[str, Any]:
    """A diagnostic: how long the /events page takes to show the replay of the past minutes' events
    (its list stops growing for EVENTS_QUIET_S), and how many."""
    settler.settle()
    t0 = time.perf_counter()
    page.goto(f"{base}/events", wait_until="load")
    count, last_change = 0, time.perf_counter()
    while time.perf_counter() - t0 < EVENTS_MAX_S:
        now = page.evaluate("() => document.querySelectorAll('#events > li').length")
        if now != count:
            count, last_change = now, time.perf_counter()
        elif count and time.perf_counter() - last_change > EVENTS_QUIET_S:
            break
        time.sleep(0.05)
    page.goto("about:blank")
    out = {"events_shown": count, "complete_s": last_change - t0}
    print(f"  /events showed {count} replayed events, the last {out['complete_s']:.2f} s after navigation", flush=True)
    return out


def after_events(page: Page, base: str, settler: Settler) -> dict[str, Any]:
    """A diagnostic: /datasets opened AFTER_EVENTS_S after /events, while that page's replay may still stream."""
    out: dict[str, Any] = {"loads": []}
    for _ in range(AFTER_EVENTS_REPEATS):
        settler.settle()
        page.goto(f"{base}/events", wait_until="load")
        time.sleep(AFTER_EVENTS_S)
        out["loads"].append(load(page, f"{base}/datasets"))
        page.goto("about:blank")
    fcp = [x["fcp"] for x in out["loads"] if x["fcp"] is not None]
    server = [x["response_start"] - x["request_start"] for x in out["loads"]]
    print(
        f"  /datasets {AFTER_EVENTS_S:g} s after /events: FCP {', '.join(f'{v:.0f}' for v in fcp)} ms, "
        f"server {', '.join(f'{v:.0f}' for v in server)} ms",
        flush=True,
    )
    return out


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/signin")
    page.get_by_label("API key").fill(key)
    page.locator("#signin button[type=submit]").click()
    page.wait_for_url(f"{base}/datasets", timeout=60_000)


def timed_call(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def measure(
    p: EmbeddedPlatform, client: la.Client, specs: list[PageSpec], repeats: int, extra: dict[str, Any]
) -> dict[str, Any]:
    """Every page ``repeats`` times, each load followed by its SDK baseline and the console diagnostic;
    before each load, the platform's processes settle. First the /events diagnostics, into ``extra``."""
    executable = shutil.which(CHROMIUM)
    if executable is None:
        raise SystemExit("Debian's chromium is not installed: run make setup (tools/system_packages.sh)")
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    results: dict[str, Any] = {
        s.key: {"path": s.path, "sdk_what": s.sdk_what, "loads": [], "sdk_s": [], "console_s": [], "available": True}
        for s in specs
    }
    assert p.nats is not None
    groups = [p.nats.process.pid, *(proc.pid for proc in p.processes.values())]
    if p.triton is not None:
        groups.append(p.triton.process.pid)
    settler = Settler(groups)
    # Playwright's sync API holds an event loop on this thread: the console's coroutines run on another.
    aio = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="console-fetch")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
            try:
                signed_out = browser.new_context(viewport=VIEWPORT)  # /signin is only served before sign-in
                context = browser.new_context(viewport=VIEWPORT)
                page = context.new_page()
                sign_in(page, p.console_url, p.api_key)
                blank = signed_out.new_page()
                # First, while the fill's events are still inside the /events page's replay window.
                extra["events_replay"] = events_replay(page, p.console_url, settler)
                extra["datasets_after_events"] = after_events(page, p.console_url, settler)
                for r in range(repeats):
                    for s in specs:
                        entry = results[s.key]
                        if not entry["available"]:
                            continue
                        on = blank if s.key == "/signin" else page
                        entry.setdefault("settle_s", []).append(settler.settle())
                        timings = load(on, p.console_url + s.path)
                        # Leave the page at once: an open /events page keeps its replay streaming.
                        on.goto("about:blank")
                        if r == 0 and timings["status"] == 404:
                            entry["available"] = False
                            entry["status"] = 404
                            print(f"  {s.key}: 404, not available", flush=True)
                            continue
                        entry["loads"].append(timings)
                        if s.sdk is not None:
                            sdk = s.sdk
                            entry["sdk_s"].append(timed_call(lambda sdk=sdk: sdk(client)))  # type: ignore[misc]
                        for label, part in s.parts.items():
                            took = timed_call(lambda part=part: part(client))  # type: ignore[misc]
                            entry.setdefault("parts_s", {}).setdefault(label, []).append(took)
                        if s.console is not None:
                            fetch = s.console
                            try:
                                entry["console_s"].append(
                                    aio.submit(timed_call, lambda fetch=fetch: asyncio.run(fetch(client))).result()  # type: ignore[misc]
                                )
                            except Exception as exc:  # a diagnostic only: the page's own timings stand
                                print(f"    (console fetch of {s.key} failed: {exc!r})", file=sys.stderr)
                                s.console = None
                    print(f"  round {r + 1}/{repeats} done", flush=True)
            finally:
                browser.close()
    finally:
        aio.shutdown()
    return results


# --- the report -----------------------------------------------------------------------------------------


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, r in results.items():
        if not r["available"]:
            out[key] = {"available": False}
            continue
        loads = r["loads"]
        fcp = [x["fcp"] / 1000 for x in loads if x["fcp"] is not None]
        server = [(x["response_start"] - x["request_start"]) / 1000 for x in loads]
        dom = [x["dom_ready"] / 1000 for x in loads]
        done = [x["load"] / 1000 for x in loads]
        sdk = med(r["sdk_s"])
        fcp_med = med(fcp)
        out[key] = {
            "available": True,
            "statuses": sorted({x["status"] for x in loads if x["status"] is not None}),
            "fcp_first_s": loads[0]["fcp"] / 1000 if loads and loads[0]["fcp"] is not None else None,
            "fcp_median_s": fcp_med,
            "fcp_max_s": max(fcp) if fcp else None,
            "fcp_missing": len(loads) - len(fcp),
            "server_median_s": med(server),
            "dom_ready_median_s": med(dom),
            "load_median_s": med(done),
            "sdk_median_s": sdk,
            "console_fetch_median_s": med(r["console_s"]),
            "ratio_fcp_over_sdk": fcp_med / sdk if fcp_med is not None and sdk else None,
            "sdk_parts_median_s": {k: med(v) for k, v in r.get("parts_s", {}).items()},
            "settle_median_s": med(r.get("settle_s", [])),
            "under_target": fcp_med is not None and fcp_med < TARGET_S,
        }
    return out


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


def table(summary: dict[str, Any]) -> str:
    rows: list[tuple[str, ...]] = [
        (
            "page",
            "FCP first",
            "FCP median",
            "FCP max",
            "server",
            "DOM ready",
            "load",
            "SDK only",
            "console fetch",
            "FCP/SDK",
            "< 1 s",
        )
    ]
    for key, s in summary.items():
        if not s["available"]:
            rows.append((key, *(["not available (404)"] + ["-"] * 9)))
            continue
        ratio = s["ratio_fcp_over_sdk"]
        rows.append(
            (
                key,
                ms(s["fcp_first_s"]),
                ms(s["fcp_median_s"]),
                ms(s["fcp_max_s"]),
                ms(s["server_median_s"]),
                ms(s["dom_ready_median_s"]),
                ms(s["load_median_s"]),
                ms(s["sdk_median_s"]),
                ms(s["console_fetch_median_s"]),
                "-" if ratio is None else f"{ratio:.1f}x",
                "yes" if s["under_target"] else "NO",
            )
        )
    return (
        str(render(rows))
        + "\n(milliseconds; FCP = first-contentful-paint; server = responseStart - requestStart; DOM ready ="
        + " domContentLoadedEventEnd; medians over the loads; SDK only = the handler's SDK calls, same concurrency;"
        + " console fetch = the console's data function in-process, replays included; FCP/SDK = medians' ratio)"
    )


PACKAGES = ("playwright", "aiohttp", "jinja2", "grpcio", "scikit-learn", "polars", "nvidia-pytriton")


def chromium_version() -> str:
    import subprocess

    executable = shutil.which(CHROMIUM)
    if executable is None:
        return "?"
    try:
        found = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30)
        out: str = found.stdout
        return out.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def bench(args: argparse.Namespace, workdir: Path, report: dict[str, Any]) -> None:
    # auto_deploy off: the deployer would otherwise deploy (and roll out) every new model version.
    settings = {"deployer": {"auto_deploy": "false"}}
    p = EmbeddedPlatform(workdir / "platform", api_key=secrets.token_urlsafe(24), settings=settings, console=True)
    try:
        t0 = time.perf_counter()
        p.start()
        report["platform_start_s"] = time.perf_counter() - t0
        print(f"platform and console started in {report['platform_start_s']:.1f} s (untimed)", flush=True)
        client = la.Client(p.api_key, p.url)
        print("filling (untimed):", flush=True)
        t0 = time.perf_counter()
        filled = fill(client, args.datasets, args.versions, args.deployments, secrets.token_hex(2))
        report["fill_s"] = {**filled.seconds, "total": time.perf_counter() - t0}
        report["filled"] = {
            "datasets": len(filled.datasets),
            "recipe_datasets": RECIPE_DATASETS,
            "models": filled.models,
            "model_versions": len(filled.jobs),
            "deployments": len(filled.deployments),
            "with_traffic": filled.with_traffic,
            "deploy_retries": filled.deploy_retries,
        }
        print(f"filled in {report['fill_s']['total']:.1f} s; loading pages ({args.repeats} rounds)", flush=True)
        specs = page_specs(client, filled)
        report["cold_monitor_calls_s"] = cold_monitor_calls(client, filled)
        report["loadavg_before_pages"] = list(os.getloadavg())
        results = measure(p, client, specs, args.repeats, report)
        client.close()
    finally:
        p.stop()
    summary = summarize(results)
    report["pages"] = results
    report["summary"] = summary
    print()
    print(table(summary))
    print()
    for s in specs:
        print(f"{s.key:<19} {s.path:<44} SDK: {s.sdk_what}")
    print("\nEach SDK call alone (median ms, one after another after the baseline):")
    for key, v in summary.items():
        if v.get("sdk_parts_median_s"):
            print(f"  {key}: " + ", ".join(f"{k} {ms(t)}" for k, t in v["sdk_parts_median_s"].items()))
    slow = {k: v for k, v in summary.items() if v["available"] and not v["under_target"]}
    missing = [k for k, v in summary.items() if not v["available"]]
    verdict = "PASS" if not slow else "MISS"
    print(f"\ntarget: every page's median first render < {TARGET_S:g} s: {verdict}")
    for key, v in slow.items():
        over = "no first paint" if v["fcp_median_s"] is None else f"{v['fcp_median_s'] - TARGET_S:.2f} s over"
        print(f"  {key}: {over}")
    if missing:
        print(f"  not available (404): {', '.join(missing)}")
    report["target"] = {
        "fcp_median_max_s": TARGET_S,
        "verdict": verdict,
        "missed": list(slow),
        "not_available": missing,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The web console's page timings against the bare SDK calls.")
    parser.add_argument("--datasets", type=int, default=50, help="datasets to upload (default 50)")
    parser.add_argument("--versions", type=int, default=200, help="model versions to train (default 200)")
    parser.add_argument("--deployments", type=int, default=20, help="deployments to make (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="loads of each page (default 5)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where the results go (default {DEFAULT_JSON})"
    )
    parser.add_argument("--workdir", type=Path, help="keep the platform's files and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    if min(args.datasets, args.versions, args.repeats) < 1 or args.deployments < 0:
        parser.error("--datasets, --versions and --repeats must be at least 1")
    started = time.perf_counter()
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    info = _machine.machine_info(PACKAGES, chromium=chromium_version())
    print(
        f"Lepton console bench  {stamp}  cpus={info['cpu_count']}  load={info['loadavg_at_start'][0]:.2f}  "
        f"datasets={args.datasets} versions={args.versions} deployments={args.deployments} repeats={args.repeats}",
        flush=True,
    )
    report: dict[str, Any] = {
        "timestamp": stamp,
        "machine": info,
        "settings": {
            "datasets": args.datasets,
            "versions": args.versions,
            "deployments": args.deployments,
            "repeats": args.repeats,
            "viewport": VIEWPORT,
            "rows_per_dataset": ROWS,
            "versions_per_model": VERSIONS_PER_MODEL,
        },
    }
    _machine.run_and_report(
        lambda wd: bench(args, wd, report), args.workdir, "lepton-console-bench-", report, args.json, started
    )
    print(f"\n{report['elapsed_s']:.1f} s in all; every load in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
