"""The one door to Triton: what the deployer asks of a host, and its tritonclient implementation.

The deployer's rollouts, reconcile loop and status reads talk to a :class:`TritonHost`
that a :class:`HostFactory` opens for an address, and close it when done.
:class:`TritonClientHost` is the real one, and the only place the deployer constructs a
tritonclient ``InferenceServerClient``. Tests give the deployer another factory (an
in-memory fleet, ``services/deployer/tests/fakes.py``) to run the rollout state machine
without a Triton.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

from lepton_core.triton_access import TritonCredential, grpc_headers
from lepton_deployer.errors import HostError, MalformedAnswer
from lepton_ml import serving
from lepton_ml.triton_model.request_gate import SECRET_PARAMETER

#: Longest wait for Triton to unload a model.
UNLOAD_TIMEOUT_S = 30.0
#: Longest wait for one inference request (a smoke test's batch).
INFER_TIMEOUT_S = 30.0


class TritonHost(Protocol):
    """One connection to one Triton server, from its factory's call until :meth:`close`.

    Every request Triton fails raises :class:`~lepton_deployer.errors.HostError`.
    """

    @property
    def url(self) -> str:
        """The host's gRPC address."""
        ...

    async def load(self, model: str, config: str, files: Mapping[str, bytes], timeout: float) -> None:
        """Loads (or reloads) ``model`` with ``config`` (JSON) and ``files`` (``file:<version>/<name>``).

        Triton answers once the load has started; :meth:`is_ready` tells when each version serves.
        """
        ...

    async def unload(self, model: str) -> None:
        """Unloads every version of ``model``."""
        ...

    async def is_ready(self, model: str, version: str = "") -> bool:
        """Whether ``version`` of ``model`` (any version, when empty) serves requests."""
        ...

    async def infer(
        self,
        model: str,
        version: str,
        rows: pl.DataFrame,
        feature_columns: Sequence[str],
        text_columns: Sequence[str],
        parameters: Mapping[str, str],
    ) -> npt.NDArray[np.float64]:
        """The model's ``prediction`` output for ``rows``, one value a row.

        ``parameters`` go with the request. Raises :class:`~lepton_deployer.errors.MalformedAnswer`
        when the answer's data does not fill the shape it declares.
        """
        ...

    async def statistics(self, model: str, version: str = "") -> list[dict[str, Any]]:
        """Triton's ``model_stats`` (JSON) of ``version`` of ``model``, of every version when empty."""
        ...

    async def close(self) -> None:
        """Ends the connection."""
        ...


#: Opens a :class:`TritonHost` for a gRPC address.
HostFactory = Callable[[str], TritonHost]


class TritonClientHost:
    """A :class:`TritonHost` over tritonclient's asyncio gRPC client.

    ``control`` and ``statistics`` open the host's restricted protocols (lepton_core.triton_access);
    each goes only with the requests it opens, never with an inference request, which Triton may
    forward to the model as parameters.
    """

    def __init__(
        self,
        url: str,
        control: TritonCredential | None = None,
        statistics: TritonCredential | None = None,
        inference_secret: str | None = None,
    ) -> None:
        self._url = url
        self._client = triton_aio.InferenceServerClient(url)
        self._control = grpc_headers(control)
        self._statistics = grpc_headers(statistics)
        # The smoke test's requests carry the secret the serving model requires of inference (as the gateway's do).
        self._inference = {SECRET_PARAMETER: inference_secret} if inference_secret else None

    @property
    def url(self) -> str:
        return self._url

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except InferenceServerException as exc:
            raise HostError(self._url, exc.message() or "", exc.status()) from exc

    async def load(self, model: str, config: str, files: Mapping[str, bytes], timeout: float) -> None:
        with self._errors():
            await self._client.load_model(
                model, headers=self._control, config=config, files=dict(files), client_timeout=timeout
            )

    async def unload(self, model: str) -> None:
        with self._errors():
            await self._client.unload_model(model, headers=self._control, client_timeout=UNLOAD_TIMEOUT_S)

    async def is_ready(self, model: str, version: str = "") -> bool:
        with self._errors():
            return bool(await self._client.is_model_ready(model, version))

    async def infer(
        self,
        model: str,
        version: str,
        rows: pl.DataFrame,
        feature_columns: Sequence[str],
        text_columns: Sequence[str],
        parameters: Mapping[str, str],
    ) -> npt.NDArray[np.float64]:
        tensors = serving.input_tensors(rows, feature_columns, text_columns)
        with self._errors():
            result = await self._client.infer(
                model,
                tensors,
                model_version=version,
                parameters=dict(parameters),
                headers=self._inference,
                client_timeout=INFER_TIMEOUT_S,
            )
        try:
            return np.asarray(result.as_numpy(serving.OUTPUT), dtype=np.float64).reshape(-1)
        except ValueError as exc:  # the answer's data does not fill its declared shape
            raise MalformedAnswer(str(exc)) from exc

    async def statistics(self, model: str, version: str = "") -> list[dict[str, Any]]:
        with self._errors():
            stats = await self._client.get_inference_statistics(model, version, headers=self._statistics, as_json=True)
        return list(stats.get("model_stats", []))

    async def close(self) -> None:
        await self._client.close()
