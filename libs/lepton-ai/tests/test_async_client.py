"""``la.AsyncClient``: every sync method has its async twin, and the twins behave (no platform needed).

The surface tests introspect ``la.Client``: a method added to any namespace, or a new
namespace, fails them until ``lepton_ai/aio.py`` has its one-line twin.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api

import lepton_ai as la
from lepton_ai import aio
from lepton_ai.datasets import Dataset
from lepton_ai.models import Model

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[3]
SAMPLE = Path(__file__).with_name("async_typing_sample.py")
UNREACHABLE = "127.0.0.1:1"

#: Sync classes whose objects come back from calls with network methods of their own,
#: and their async wrappers. A new such class must be added here (and in aio.py).
HANDLES: dict[type, type] = {Dataset: la.AsyncDataset, Model: la.AsyncModel}


def public_methods(cls: type) -> dict[str, Any]:
    return {name: fn for name, fn in inspect.getmembers(cls, inspect.isfunction) if not name.startswith("_")}


def returned(fn: Any) -> str:
    """A sync method's return annotation, as written (``from __future__ import annotations``)."""
    return str(inspect.signature(fn).return_annotation)


def returned_class(fn: Any) -> type | None:
    """The class a sync method returns, when its annotation names one of its module's names."""
    value = vars(sys.modules[fn.__module__]).get(returned(fn))
    return value if isinstance(value, type) else None


def expected_return(fn: Any) -> str:
    """What the twin of ``fn`` returns: handles wrapped, iterators async, anything else as is."""
    text = re.sub(r"\bbuiltins\.", "", returned(fn))
    for sync, wrapper in HANDLES.items():
        text = re.sub(rf"\b{sync.__name__}\b", wrapper.__name__, text)
    return "Async" + text if text.startswith("Iterator[") else text


def check_twins(sync_cls: type, async_cls: type, *, local: frozenset[str] = frozenset()) -> None:
    """Every public method of ``sync_cls`` has a twin on ``async_cls`` with its signature."""
    for name, fn in public_methods(sync_cls).items():
        where = f"{async_cls.__name__}.{name} (twin of {sync_cls.__name__}.{name})"
        twin = getattr(async_cls, name, None)
        assert twin is not None, f"{where} is missing: add it to lepton_ai/aio.py"
        if name in local:  # no call to the platform: the same method, not awaited
            assert inspect.signature(twin) == inspect.signature(fn), where
            continue
        sync_params = list(inspect.signature(fn).parameters.values())
        twin_params = list(inspect.signature(twin).parameters.values())
        assert [p.name for p in twin_params] == [p.name for p in sync_params], where
        for ours, theirs in zip(twin_params, sync_params, strict=True):
            assert (ours.kind, ours.default) == (theirs.kind, theirs.default), f"{where}: parameter {ours.name}"
            handle = next((h for h in HANDLES if theirs.annotation == h.__name__), None)
            accepted = {theirs.annotation} | ({f"{handle.__name__} | {HANDLES[handle].__name__}"} if handle else set())
            assert ours.annotation in accepted, f"{where}: parameter {ours.name} is {ours.annotation!r}"
        twin_returns = re.sub(r"\bbuiltins\.", "", str(inspect.signature(twin).return_annotation))
        assert twin_returns == expected_return(fn), where
        if returned(fn).startswith("Iterator["):
            assert inspect.isasyncgenfunction(twin), f"{where} must be an async iterator (use _twin_iter)"
        elif hasattr(returned_class(fn), "__aiter__"):  # already async-capable: handed back as is
            assert not inspect.iscoroutinefunction(twin) and twin.__wrapped__ is fn, f"{where} (use _as_is)"
        else:
            assert inspect.iscoroutinefunction(twin), f"{where} must be awaitable"
        if hasattr(twin, "__wrapped__"):
            assert twin.__wrapped__ is fn, f"{where} runs {twin.__wrapped__.__qualname__}"


def test_every_namespace_method_of_the_client_has_an_async_twin() -> None:
    sync = la.Client("key", UNREACHABLE)
    client = la.AsyncClient("key", UNREACHABLE)
    namespaces = {name: ns for name, ns in vars(sync).items() if not name.startswith("_")}
    assert {"datasets", "jobs", "models", "deployments", "monitor", "events", "keys", "plans"} <= set(namespaces)
    for name, ns in namespaces.items():
        twin = getattr(client, name, None)
        assert twin is not None, f"AsyncClient has no namespace {name!r}: add it to lepton_ai/aio.py"
        assert type(twin.sync) is type(ns) and twin.sync is getattr(client.sync, name)
        check_twins(type(ns), type(twin))


def test_the_client_itself_has_its_twin() -> None:
    sync_params = inspect.signature(la.Client).parameters
    params = inspect.signature(la.AsyncClient).parameters
    assert list(params)[: len(sync_params)] == list(sync_params) and list(params)[len(sync_params) :] == ["max_workers"]
    for name, p in sync_params.items():
        assert (params[name].kind, params[name].default, params[name].annotation) == (p.kind, p.default, p.annotation)
    assert isinstance(la.AsyncClient.endpoints, property)
    assert inspect.iscoroutinefunction(la.AsyncClient.close)
    assert inspect.iscoroutinefunction(la.AsyncClient.__aenter__)
    assert inspect.iscoroutinefunction(la.AsyncClient.__aexit__)
    assert set(public_methods(la.Client)) == {"audit", "close", "usage", "whoami"}, "a new Client method needs its twin"
    check_twins(la.Client, la.AsyncClient)  # whoami, audit and usage awaited; close too, though not a twin
    assert la.AsyncClient("k", UNREACHABLE, endpoints={"trainer": "h:1"}, insecure=True).endpoints["trainer"] == "h:1"
    with pytest.raises(la.InvalidArgument, match="max_workers"):
        la.AsyncClient("k", UNREACHABLE, max_workers=0)


def test_returned_objects_and_models_have_async_twins() -> None:
    check_twins(Dataset, la.AsyncDataset)
    check_twins(Model, la.AsyncModel, local=frozenset({"get_params"}))
    data = {f.name for f in fields(Dataset) if not f.name.startswith("_")}
    assert set(inspect.get_annotations(la.AsyncDataset)) == data
    attributes = {n for n in vars(Model()) if not n.startswith("_")} | {"algorithm"}
    assert set(inspect.get_annotations(la.AsyncModel)) == attributes
    model = la.AsyncModel(la.models.Ridge(alpha=0.5))
    assert (model.algorithm, model.version, model.get_params()) == ("ridge", 0, {"alpha": 0.5})
    with pytest.raises(AttributeError):
        _ = model.no_such_attribute  # type: ignore[attr-defined]


def test_every_returned_class_with_methods_comes_back_async() -> None:
    """A namespace method returning a class of the SDK with methods of its own needs a wrapper."""
    for ns in vars(la.Client("key", UNREACHABLE)).values():
        if not hasattr(ns, "_t"):
            continue
        for name, fn in public_methods(type(ns)).items():
            cls = returned_class(fn)
            if cls is None or not cls.__module__.startswith("lepton_ai") or issubclass(cls, Exception):
                continue
            if public_methods(cls) and not hasattr(cls, "__aiter__"):
                assert cls in HANDLES, f"{type(ns).__name__}.{name} returns {cls.__name__}: wrap it in aio.py"


async def test_calls_run_on_worker_threads_in_the_callers_context() -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")
    request_id.set("r-1")
    run = aio._Runner(2)
    loop_thread = threading.get_ident()
    thread, seen = await run(lambda: (threading.get_ident(), request_id.get()))
    assert thread != loop_thread and seen == "r-1"
    run.shutdown()
    assert await run(lambda: 42) == 42  # the pool starts again, as channels reopen after close()
    run.shutdown()


async def test_a_stream_is_closed_when_its_consumer_stops() -> None:
    closed = threading.Event()

    def numbers() -> Iterator[int]:
        try:
            yield from range(100)
        finally:
            closed.set()

    run = aio._Runner(2)
    stream = run.stream(numbers)
    seen = []
    async for n in stream:
        seen.append(n)
        if n == 2:
            break
    await stream.aclose()
    assert seen == [0, 1, 2] and closed.is_set()
    run.shutdown()


async def test_a_cancelled_stream_does_not_wait_and_closes_after_its_step() -> None:
    """A consumer cancelled while a step blocks on its thread is free at once; the sync
    iterator (a gRPC stream, in the SDK) is closed as soon as that step returns."""
    release, closed, stepping = threading.Event(), threading.Event(), threading.Event()

    def slow() -> Iterator[int]:
        try:
            yield 1
            stepping.set()
            release.wait(30)
            yield 2
        finally:
            closed.set()

    run = aio._Runner(2)
    got: list[int] = []
    first = asyncio.Event()

    async def consume() -> None:
        async for n in run.stream(slow):
            got.append(n)
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    # Cancel while the next step runs on its thread (before it starts, there is nothing to wait for).
    assert await asyncio.to_thread(stepping.wait, 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert got == [1] and not closed.is_set()  # the step still runs on its thread
    release.set()
    assert await asyncio.to_thread(closed.wait, 30)
    run.shutdown()


async def test_errors_are_the_sync_errors_and_close_reopens(tmp_path: Path) -> None:
    async with la.AsyncClient("key", UNREACHABLE) as client:
        with pytest.raises(la.InvalidArgument, match="no file"):
            await client.datasets.upload(tmp_path / "missing.csv")
        with pytest.raises(la.Unavailable):
            await client.models.get("m")
        with pytest.raises(la.Unavailable):
            async for _ in client.jobs.watch("job", ride_out=1):
                pass
    with pytest.raises(la.Unavailable):  # closed: the next call opens a channel again
        await client.jobs.get("job")
    await client.close()


@pytest.mark.timeout(300)  # a cold mypy cache (no `make check` before) takes a minute or two
def test_types_stay_exact_for_mypy(monkeypatch: pytest.MonkeyPatch) -> None:
    """async_typing_sample.py type-checks (assert_type, and ignores that must be needed)."""
    monkeypatch.chdir(ROOT)
    # `make check`'s options, so its cache serves; only the sample's own errors count here.
    out, err, _ = mypy_api.run(["--config-file", str(ROOT / "pyproject.toml"), str(SAMPLE)])
    problems = [line for line in out.splitlines() if SAMPLE.name in line and ": error:" in line]
    assert not problems and not err, "\n".join(problems) + err
    notes = dict(re.findall(r":(\d+): note: Revealed type is \"(.*)\"", out))
    lines = SAMPLE.read_text().splitlines()
    revealed = {lines[int(n) - 1].strip(): t for n, t in notes.items()}
    upload = revealed["reveal_type(client.datasets.upload)"]
    assert upload.startswith("def (source: ") and ", *, format: " in upload and "progress: " in upload, upload
    assert upload.endswith("-> typing.Coroutine[Any, Any, lepton_ai.aio.AsyncDataset]"), upload
    watch = revealed["reveal_type(client.jobs.watch)"]
    assert watch == (
        "def (job_id: str, *, timeout: float =, ride_out: float =) -> "
        "typing.AsyncIterator[lepton.trainer.v1.trainer_pb2.TrainingJob]"
    ), watch
