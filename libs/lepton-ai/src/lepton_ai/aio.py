"""``la.AsyncClient``: the async twin of :class:`lepton_ai.Client`.

>>> async with la.AsyncClient("your_api_key") as client:
...     dataset = await client.datasets.upload("sales.csv")
...     model = await la.AsyncModel(la.models.Ridge()).fit(dataset)

One implementation, two surfaces. Every async method is the sync method of the same
name run on a worker thread (gRPC's blocking calls release the GIL), so the event
loop never waits on the network and there is no second copy of any logic. Each twin
is declared in one line from its sync method (``upload = _twin_to(Datasets.upload,
AsyncDataset)``): its parameters, defaults and docstring are the sync method's, and
mypy derives its type from the sync method's through a ``ParamSpec``, so the two
cannot drift apart. A test checks that every public sync method has its twin.

- A method that returns a value returns it when awaited.
- A method that returns an iterator (``jobs.watch``, ``models.search``,
  ``monitor.logs``) returns an async iterator; each step runs on a worker thread.
- ``events.subscribe`` is not awaited: it does no I/O and its ``EventStream`` is
  already asynchronous (``async with``, ``async for`` on ``grpc.aio``).
- What has network methods of its own comes back wrapped: a :class:`~lepton_ai.Dataset`
  as an :class:`AsyncDataset`, and :class:`AsyncModel` wraps a ``la.models`` estimator.
  Their ``.sync`` is the wrapped object, for code that wants to block.
- Calls carry the caller's context (its trace, for ``traceparent``).
- Cancelling a call stops waiting for it at once. A request already sent still runs to
  its end on its thread (a unary call cannot be recalled), a stream is closed when its
  current step returns, and a cancelled ``AsyncModel.fit`` cancels its training job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar

from lepton_ai._transport import ClientCertificate, RootCertificates
from lepton_ai.access import Keys, Plans, Tenants
from lepton_ai.client import Client
from lepton_ai.datasets import Dataset, Datasets
from lepton_ai.deployments import Deployments
from lepton_ai.errors import InvalidArgument
from lepton_ai.events import Events
from lepton_ai.jobs import Jobs
from lepton_ai.models import Model
from lepton_ai.monitor import Monitor
from lepton_ai.registry import Models

__all__ = [
    "AsyncClient",
    "AsyncDataset",
    "AsyncDatasets",
    "AsyncDeployments",
    "AsyncEvents",
    "AsyncJobs",
    "AsyncKeys",
    "AsyncModel",
    "AsyncModels",
    "AsyncMonitor",
]

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")
U = TypeVar("U")

#: Worker threads per client: calls in flight at once (a stream holds one while it waits).
MAX_WORKERS = 32


class _Runner:
    """Runs sync calls on a pool of worker threads, in the caller's context.

    The pool starts on first use and starts again after :meth:`shutdown`, as the
    client's channels reopen after ``close()``.
    """

    def __init__(self, max_workers: int) -> None:
        if max_workers < 1:
            raise InvalidArgument(f"max_workers: must be at least 1, got {max_workers}")
        self._max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        context = contextvars.copy_context()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="lepton-aio")
            return self._pool.submit(lambda: context.run(fn, *args, **kwargs))

    async def __call__(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    async def stream(self, fn: Callable[P, Iterator[T]], *args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[T, None]:
        """The items of ``fn(...)``, each fetched on a worker thread."""
        items = await self(fn, *args, **kwargs)
        step: Future[T | _End] | None = None
        try:
            while True:
                step = self.submit(_advance, items)
                item = await asyncio.wrap_future(step)
                if isinstance(item, _End):
                    return
                yield item
        finally:
            # Closing ends the sync iterator's gRPC stream. If we were cancelled while a step
            # still runs on its thread, the iterator is busy: close it when that step returns.
            if step is None or step.done():
                _close(items)
            else:
                step.add_done_callback(lambda _: _close(items))

    def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


class _End:
    """What :func:`_advance` returns when the iterator is exhausted."""


def _advance(items: Iterator[T]) -> T | _End:
    return next(items, _End())


def _close(items: object) -> None:
    close = getattr(items, "close", None)
    if callable(close):
        close()


#: The pool of what no client's pool runs: an AsyncModel before it is fitted on an AsyncDataset.
_SHARED = _Runner(MAX_WORKERS)


class _Twin(Generic[S]):
    """The async face of one sync object: ``_sync`` does the work, ``_run`` gives it a thread."""

    __slots__ = ("_run", "_sync")

    def __init__(self, sync: S, run: _Runner) -> None:
        self._sync = sync
        self._run = run

    @property
    def sync(self) -> S:
        """The sync object behind this one (same connection), for code that wants to block."""
        return self._sync

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in vars(cls).items():
            if inspect.isfunction(member) and hasattr(member, "__wrapped__"):
                member.__qualname__ = f"{cls.__qualname__}.{name}"
                member.__module__ = cls.__module__

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._sync!r})"


def _signed(twin: Callable[..., Any], method: Callable[..., Any], returns: object) -> None:
    """Gives ``twin`` the name, docstring and parameters of ``method``, and its own return."""
    functools.update_wrapper(twin, method)
    twin.__annotations__ = {**method.__annotations__, "return": returns}
    twin.__signature__ = inspect.signature(method).replace(return_annotation=returns)  # type: ignore[attr-defined]


def _twin(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[_Twin[S], P], Coroutine[Any, Any, R]]:
    """The awaitable twin of a sync method: same parameters, same result."""

    async def twin(self: _Twin[S], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._run(method, self._sync, *args, **kwargs)

    _signed(twin, method, inspect.signature(method).return_annotation)
    return twin


def _twin_to(
    method: Callable[Concatenate[S, P], R], wrap: Callable[[R, _Runner], U]
) -> Callable[Concatenate[_Twin[S], P], Coroutine[Any, Any, U]]:
    """The awaitable twin of a sync method whose result has network methods: ``wrap`` makes it async."""

    async def twin(self: _Twin[S], /, *args: P.args, **kwargs: P.kwargs) -> U:
        return wrap(await self._run(method, self._sync, *args, **kwargs), self._run)

    _signed(twin, method, inspect.signature(wrap).return_annotation)
    return twin


def _twin_iter(
    method: Callable[Concatenate[S, P], Iterator[T]],
) -> Callable[Concatenate[_Twin[S], P], AsyncIterator[T]]:
    """The async-iterator twin of a sync method that returns an iterator."""

    async def twin(self: _Twin[S], /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        async with contextlib.aclosing(self._run.stream(method, self._sync, *args, **kwargs)) as items:
            async for item in items:
                yield item

    returns = str(inspect.signature(method).return_annotation)
    _signed(twin, method, "Async" + returns if returns.startswith("Iterator[") else f"AsyncIterator[{returns}]")
    return twin


def _as_is(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[_Twin[S], P], R]:
    """The twin of a sync method that does no I/O and returns something already async-capable
    (``events.subscribe`` gives an ``EventStream``, for ``async with`` / ``async for``)."""

    def twin(self: _Twin[S], /, *args: P.args, **kwargs: P.kwargs) -> R:
        return method(self._sync, *args, **kwargs)

    _signed(twin, method, inspect.signature(method).return_annotation)
    return twin


class _Delegating(_Twin[S]):
    """Reads the annotated public attributes of the wrapped object (``dataset.version_id``)."""

    __slots__ = ()

    if not TYPE_CHECKING:  # mypy sees only the annotations; any other name is an error

        def __getattr__(self, name: str) -> Any:
            if not name.startswith("_") and any(name in inspect.get_annotations(c) for c in type(self).__mro__):
                return getattr(self._sync, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def _async_dataset(dataset: Dataset, run: _Runner) -> AsyncDataset:
    return AsyncDataset(dataset, run)


def _async_datasets(datasets: list[Dataset], run: _Runner) -> list[AsyncDataset]:
    return [AsyncDataset(d, run) for d in datasets]


class AsyncDataset(_Delegating[Dataset]):
    """One immutable dataset version, as :class:`~lepton_ai.Dataset`, with awaitable methods.

    Its attributes are the version's (``version_id``, ``columns``, ``row_count``...);
    ``to_polars``, ``profile``, ``apply``... are awaited. ``apply`` and
    ``update_schema`` give the new version as an ``AsyncDataset``.
    """

    __slots__ = ()

    id: str
    version_id: str
    name: str
    columns: dict[str, str]
    row_count: int
    origin: str
    parent_version_id: str
    recipe: dict[str, Any] | None
    fitted: list[dict[str, Any]] | None
    deduplicated: bool

    to_polars = _twin(Dataset.to_polars)
    to_pandas = _twin(Dataset.to_pandas)
    profile = _twin(Dataset.profile)
    validate = _twin(Dataset.validate)
    apply = _twin_to(Dataset.apply, _async_dataset)
    update_schema = _twin_to(Dataset.update_schema, _async_dataset)
    split = _twin(Dataset.split)
    set_rules = _twin(Dataset.set_rules)


class AsyncDatasets(_Twin[Datasets]):
    """``client.datasets`` of an :class:`AsyncClient`: :class:`~lepton_ai.datasets.Datasets`, awaited."""

    __slots__ = ()

    upload = _twin_to(Datasets.upload, _async_dataset)
    get = _twin_to(Datasets.get, _async_dataset)
    list = _twin(Datasets.list)
    versions = _twin_to(Datasets.versions, _async_datasets)
    set_rules = _twin(Datasets.set_rules)
    delete = _twin(Datasets.delete)


class AsyncJobs(_Twin[Jobs]):
    """``client.jobs`` of an :class:`AsyncClient`; ``watch`` is an async iterator."""

    __slots__ = ()

    submit = _twin(Jobs.submit)
    get = _twin(Jobs.get)
    list = _twin(Jobs.list)
    watch = _twin_iter(Jobs.watch)
    cancel = _twin(Jobs.cancel)
    algorithms = _twin(Jobs.algorithms)


class AsyncModels(_Twin[Models]):
    """``client.models`` of an :class:`AsyncClient`; ``search`` is an async iterator."""

    __slots__ = ()

    list = _twin(Models.list)
    get = _twin(Models.get)
    version = _twin(Models.version)
    versions = _twin(Models.versions)
    lineage = _twin(Models.lineage)
    set_alias = _twin(Models.set_alias)
    search = _twin_iter(Models.search)
    update = _twin(Models.update)
    update_version = _twin(Models.update_version)
    delete_version = _twin(Models.delete_version)
    download = _twin(Models.download)
    export_edge = _twin(Models.export_edge)
    evaluate = _twin(Models.evaluate)
    evaluations = _twin(Models.evaluations)
    plot = _twin(Models.plot)


class AsyncDeployments(_Twin[Deployments]):
    """``client.deployments`` of an :class:`AsyncClient`."""

    __slots__ = ()

    get = _twin(Deployments.get)
    get_or_none = _twin(Deployments.get_or_none)
    list = _twin(Deployments.list)
    deploy = _twin(Deployments.deploy)
    rollback = _twin(Deployments.rollback)
    delete = _twin(Deployments.delete)
    status = _twin(Deployments.status)
    route = _twin(Deployments.route)
    predict = _twin(Deployments.predict)


class AsyncMonitor(_Twin[Monitor]):
    """``client.monitor`` of an :class:`AsyncClient`; ``logs`` is an async iterator."""

    __slots__ = ()

    metrics = _twin(Monitor.metrics)
    drift = _twin(Monitor.drift)
    send_labels = _twin(Monitor.send_labels)
    performance = _twin(Monitor.performance)
    set_rules = _twin(Monitor.set_rules)
    rules = _twin(Monitor.rules)
    alerts = _twin(Monitor.alerts)
    set_retraining_policy = _twin(Monitor.set_retraining_policy)
    logs = _twin_iter(Monitor.logs)
    summary = _twin(Monitor.summary)


class AsyncEvents(_Twin[Events]):
    """``client.events`` of an :class:`AsyncClient`: ``subscribe`` is not awaited; its
    :class:`~lepton_ai.EventStream` is used with ``async with`` and ``async for``."""

    __slots__ = ()

    subscribe = _as_is(Events.subscribe)
    dead_letters = _twin(Events.dead_letters)
    replay_dead_letter = _twin(Events.replay_dead_letter)


class AsyncKeys(_Twin[Keys]):
    """``client.keys`` of an :class:`AsyncClient`: :class:`~lepton_ai.access.Keys`, awaited."""

    __slots__ = ()

    create = _twin(Keys.create)
    list = _twin(Keys.list)
    revoke = _twin(Keys.revoke)
    rotate = _twin(Keys.rotate)


class AsyncPlans(_Twin[Plans]):
    """``client.plans`` of an :class:`AsyncClient`: :class:`~lepton_ai.access.Plans`, awaited."""

    __slots__ = ()

    list = _twin(Plans.list)
    set = _twin(Plans.set)


class AsyncTenants(_Twin[Tenants]):
    """``client.tenants`` of an :class:`AsyncClient`: :class:`~lepton_ai.access.Tenants`, awaited."""

    __slots__ = ()

    delete = _twin(Tenants.delete)
    deletion = _twin(Tenants.deletion)


class AsyncModel(_Delegating[Model]):
    """A ``la.models`` estimator with awaitable ``fit``, ``predict``, ``predict_proba`` and ``score``.

    Args:
        model: The estimator to wrap (``la.models.Ridge(alpha=0.5)``); its attributes
            (``model_name``, ``version``, ``metrics``...) read through, and ``.sync``
            is the estimator itself.

    Example:
        >>> model = la.AsyncModel(la.models.LinearRegression())
        >>> await model.fit(dataset)  # an AsyncDataset (or a Dataset)
        >>> prediction = await model.predict(new_data)

    ``fit`` runs on the dataset's client's threads. Cancelling it (``asyncio.wait_for``,
    ``task.cancel()``) cancels the training job once it has been submitted, as Ctrl-C
    does for the sync ``fit``.
    """

    __slots__ = ()

    algorithm: str
    job_id: str
    model_name: str
    version: int
    metrics: dict[str, float]
    features: list[str]
    target: str

    def __init__(self, model: Model) -> None:
        super().__init__(model, _SHARED)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters given (no call to the platform, so not awaited)."""
        return self._sync.get_params(deep)

    async def fit(
        self,
        dataset: Dataset | AsyncDataset,
        target: str | None = None,
        *,
        model_name: str = "",
        seed: int | None = None,
        progress: bool | None = None,
        timeout: float = 3600.0,
    ) -> AsyncModel:
        """Trains on ``dataset`` through the platform and waits until the model is registered."""
        if isinstance(dataset, AsyncDataset):
            self._run, dataset = dataset._run, dataset.sync
        earlier_job = self._sync.job_id
        try:
            await self._run(
                self._sync.fit, dataset, target, model_name=model_name, seed=seed, progress=progress, timeout=timeout
            )
        except asyncio.CancelledError:
            job_id = self._sync.job_id
            if job_id and job_id != earlier_job:  # submitted: stop it, as Ctrl-C does for the sync fit
                self._run.submit(Jobs(dataset._datasets._t).cancel, job_id)
            raise
        return self

    async def score(self, dataset: Dataset | AsyncDataset) -> float:
        """R² for regressors, accuracy for classifiers, on every row of ``dataset``."""
        return await self._run(self._sync.score, dataset.sync if isinstance(dataset, AsyncDataset) else dataset)

    predict = _twin(Model.predict)
    predict_proba = _twin(Model.predict_proba)
    bundle = _twin(Model.bundle)
    wait_deployed = _twin(Model.wait_deployed)


class AsyncClient(_Twin[Client]):
    """A connection to a Lepton platform for asyncio code: :class:`~lepton_ai.Client`, awaited.

    Every method of every namespace of ``la.Client``, and its own ``whoami``, ``audit`` and ``usage``,
    is here with the same name, parameters and defaults, and is awaited
    (``await client.models.get("m")``, ``await client.whoami()``);
    methods that give an iterator give an async iterator
    (``async for job in client.jobs.watch(job_id)``), except ``events.subscribe``,
    whose stream is asynchronous already (``async with client.events.subscribe(...)``).
    Calls run the sync client's code
    on worker threads, so calls run concurrently (``asyncio.gather``) and the event
    loop keeps running while they wait on the platform.

    Args:
        api_key: Your API key; defaults to ``LEPTON_API_KEY``.
        url: The platform's address, as for :class:`~lepton_ai.Client`.
        endpoints: Per-service addresses that override ``url``.
        root_certificates: The CA the platform's certificate must chain to, as for
            :class:`~lepton_ai.Client`.
        insecure: Allow plaintext to an address beyond this machine, as for
            :class:`~lepton_ai.Client`.
        client_certificate: A client certificate for mutual TLS, as for :class:`~lepton_ai.Client`.
        max_workers: Worker threads, i.e. calls in flight at once; more wait their
            turn. A stream being iterated holds one while it waits for its next item.

    Datasets come back as :class:`AsyncDataset` (``await dataset.to_polars()``);
    wrap an estimator in :class:`AsyncModel` to await ``fit`` and ``predict``.
    ``client.sync`` is the same connection as a :class:`~lepton_ai.Client`.

    Example:
        >>> import lepton_ai as la
        >>> async with la.AsyncClient("your_api_key") as client:
        ...     sales, stores = await asyncio.gather(
        ...         client.datasets.upload("sales.csv"), client.datasets.upload("stores.csv")
        ...     )
    """

    __slots__ = ("datasets", "deployments", "events", "jobs", "keys", "models", "monitor", "plans", "tenants")

    def __init__(
        self,
        api_key: str | None = None,
        url: str | None = None,
        *,
        endpoints: Mapping[str, str] | None = None,
        root_certificates: RootCertificates | None = None,
        insecure: bool | None = None,
        client_certificate: ClientCertificate | None = None,
        max_workers: int = MAX_WORKERS,
    ) -> None:
        client = Client(
            api_key,
            url,
            endpoints=endpoints,
            root_certificates=root_certificates,
            insecure=insecure,
            client_certificate=client_certificate,
        )
        run = _Runner(max_workers)
        super().__init__(client, run)
        self.datasets = AsyncDatasets(client.datasets, run)
        self.jobs = AsyncJobs(client.jobs, run)
        self.models = AsyncModels(client.models, run)
        self.deployments = AsyncDeployments(client.deployments, run)
        self.monitor = AsyncMonitor(client.monitor, run)
        self.events = AsyncEvents(client.events, run)
        self.keys = AsyncKeys(client.keys, run)
        self.plans = AsyncPlans(client.plans, run)
        self.tenants = AsyncTenants(client.tenants, run)

    whoami = _twin(Client.whoami)
    audit = _twin(Client.audit)
    usage = _twin(Client.usage)

    @property
    def endpoints(self) -> dict[str, str]:
        """The address of each service this client talks to."""
        return self._sync.endpoints

    async def close(self) -> None:
        """Closes the channels (calls still in flight fail) and stops the worker threads.

        As with ``Client.close``, a later call opens them again.
        """
        self._sync.close()  # here, not on a worker: every worker may be busy with a stream
        self._run.shutdown()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
