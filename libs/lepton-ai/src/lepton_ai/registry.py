"""``client.models``: the model registry, its artifacts, and evaluations on demand."""

from __future__ import annotations

import builtins
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lepton.evaluator.v1 import evaluator_pb2, evaluator_pb2_grpc
from lepton.registry.v1 import registry_pb2, registry_pb2_grpc

from lepton_ai import _artifacts
from lepton_ai._transport import Transport
from lepton_ai.errors import DataLoss, FailedPrecondition

if TYPE_CHECKING:
    from lepton_ml.signing import TrustedKeys

#: The platform's artifact public keys, asked for once per client (its transport).
_KEYS: weakref.WeakKeyDictionary[Transport, TrustedKeys] = weakref.WeakKeyDictionary()


class Models:
    """The model registry; reached as ``client.models``."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def _stub(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self._t.channel("registry"))

    def list(self) -> builtins.list[registry_pb2.RegisteredModel]:
        return list(self._t.call("registry", self._stub().ListModels, registry_pb2.ListModelsRequest()).models)

    def get(self, name: str) -> registry_pb2.RegisteredModel:
        result: registry_pb2.RegisteredModel = self._t.call(
            "registry", self._stub().GetModel, registry_pb2.GetModelRequest(name=name)
        )
        return result

    def version(self, name: str, version: int = 0, alias: str = "") -> registry_pb2.ModelVersion:
        """A version by number, by alias, or the latest."""
        request = registry_pb2.GetModelVersionRequest(model_name=name, version=version, alias=alias)
        result: registry_pb2.ModelVersion = self._t.call("registry", self._stub().GetModelVersion, request)
        return result

    def versions(self, name: str) -> builtins.list[registry_pb2.ModelVersion]:
        request = registry_pb2.ListModelVersionsRequest(model_name=name)
        return list(self._t.call("registry", self._stub().ListModelVersions, request).versions)

    def lineage(self, name: str, version: int = 0, alias: str = "") -> registry_pb2.LineageGraph:
        """Datasets (back to the raw upload, with recipes), training job, evaluations, deployments."""
        request = registry_pb2.GetModelVersionRequest(model_name=name, version=version, alias=alias)
        result: registry_pb2.LineageGraph = self._t.call("registry", self._stub().GetLineage, request)
        return result

    def set_alias(
        self, name: str, alias: str, version: int, expected_version: int | None = None
    ) -> registry_pb2.ModelAlias:
        """Moves an alias; with ``expected_version``, only if it still points there (else Conflict)."""
        request = registry_pb2.SetAliasRequest(model_name=name, alias=alias, version=version)
        if expected_version is not None:
            request.expected_version = expected_version
        result: registry_pb2.ModelAlias = self._t.call("registry", self._stub().SetAlias, request)
        return result

    def search(
        self,
        *,
        name_contains: str = "",
        tags: dict[str, str] | None = None,
        alias: str = "",
        dataset_version_id: str = "",
        algorithm: str = "",
        task: str = "",
        status: str = "",
        metric: str = "",
        min_value: float | None = None,
        max_value: float | None = None,
        page_size: int = 50,
    ) -> Iterator[registry_pb2.ModelVersion]:
        """Versions across models matching every filter given, page after page.

        ``tags`` match on the version or on its model; ``min_value``/``max_value``
        bound ``metric``.
        """
        request = registry_pb2.SearchModelVersionsRequest(
            name_contains=name_contains,
            tags=tags or {},
            alias=alias,
            dataset_version_id=dataset_version_id,
            algorithm=algorithm,
            task=task,
            status=status,
            metric=metric,
            page_size=page_size,
        )
        if min_value is not None:
            request.min_value = min_value
        if max_value is not None:
            request.max_value = max_value
        while True:
            page = self._t.call("registry", self._stub().SearchModelVersions, request)
            yield from page.versions
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def update(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        remove_tags: builtins.list[str] | tuple[str, ...] = (),
    ) -> registry_pb2.RegisteredModel:
        """Sets a model's description and tags (only what is given changes)."""
        request = registry_pb2.UpdateModelRequest(name=name, set_tags=tags or {}, remove_tags=list(remove_tags))
        if description is not None:
            request.description = description
        result: registry_pb2.RegisteredModel = self._t.call("registry", self._stub().UpdateModel, request)
        return result

    def update_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        remove_tags: builtins.list[str] | tuple[str, ...] = (),
        status: str = "",
    ) -> registry_pb2.ModelVersion:
        """Sets a version's description, tags or status (``"ready"`` or ``"archived"``)."""
        request = registry_pb2.UpdateModelVersionRequest(
            model_name=name, version=version, set_tags=tags or {}, remove_tags=list(remove_tags), status=status
        )
        if description is not None:
            request.description = description
        result: registry_pb2.ModelVersion = self._t.call("registry", self._stub().UpdateModelVersion, request)
        return result

    def delete_version(self, name: str, version: int) -> registry_pb2.DeleteModelVersionResponse:
        """Deletes one version: its record, artifact, evaluations and monitoring state leave the store.

        The version must be named (there is no "latest" here). Refused (:class:`FailedPrecondition`,
        naming them) while an alias points at it or a deployment serves it. The evaluator and
        the monitor erase their part moments after the call returns (``registry.version.deleted``).
        """
        request = registry_pb2.DeleteModelVersionRequest(model_name=name, version=version)
        result: registry_pb2.DeleteModelVersionResponse = self._t.call(
            "registry", self._stub().DeleteModelVersion, request
        )
        return result

    def _artifact_keys(self) -> TrustedKeys:
        """The platform's artifact public keys (``GetArtifactPublicKey``), asked for once per client.

        They come from the registry's configuration over this client's authenticated channel,
        never from the object store the artifacts are in.
        """
        found = _KEYS.get(self._t)
        if found is None:
            from lepton_ml.signing import parse_public_keys

            request = registry_pb2.GetArtifactPublicKeyRequest()
            answer = self._t.call("registry", self._stub().GetArtifactPublicKey, request)
            found = _KEYS[self._t] = parse_public_keys(answer.pem.encode(), "the registry's artifact public key")
        return found

    def download(self, name: str, version: int = 0, alias: str = "") -> bytes:
        """A version's artifact, checked against its digest and its signature: the bundle zip inside
        the platform's signature envelope (:mod:`lepton_ml.signing`), as stored.

        Raises:
            DataLoss: It arrived damaged, or it is unsigned, altered after signing, or signed by a
                key the platform does not trust.
        """
        import hashlib

        request = registry_pb2.GetModelVersionRequest(model_name=name, version=version, alias=alias)
        parts, digest = [], ""
        for chunk in self._t.stream("registry", self._stub().DownloadArtifact, request):
            digest = digest or chunk.digest
            parts.append(chunk.data)
        data = b"".join(parts)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise DataLoss(f"the artifact of {name} v{version or alias or 'latest'} arrived damaged")
        _artifacts.verify(data, self._artifact_keys())  # refuses an artifact not signed by the platform
        return data

    def export_edge(self, name: str, version: int = 0, *, alias: str = "", sample: Any = None) -> bytes:
        """The version as a self-contained edge bundle (zip): ONNX with the preprocessing folded
        in, the signature, the exactness check, a numpy+onnxruntime runner and a Triton
        onnxruntime model directory. ``sample`` (rows, e.g. a DataFrame) makes the exactness
        check use real rows instead of synthesized ones.

        Raises FailedPrecondition when the model has no exact ONNX form (the message says why).
        """
        from lepton_ml import onnx_export, serving

        bundle = _artifacts.load_bundle(self.download(name, version, alias), self._artifact_keys())
        rows = None
        if sample is not None:
            rows = serving.as_frame(sample, _artifacts.input_columns(bundle.signature))
        try:
            return onnx_export.export_edge_bundle(bundle, rows, name=name)
        except onnx_export.ConversionRefused as exc:
            raise FailedPrecondition(f"{name} has no exact ONNX form: {exc}") from None

    def _evaluator(self) -> evaluator_pb2_grpc.EvaluationServiceStub:
        return evaluator_pb2_grpc.EvaluationServiceStub(self._t.channel("evaluator"))

    def evaluate(
        self,
        name: str,
        version: int = 0,
        *,
        alias: str = "",
        dataset_version_id: str = "",
        rows: str = "",
        cv_folds: int = 0,
        timeout: float = 600.0,
    ) -> evaluator_pb2.Evaluation:
        """Evaluates a version now, on its training data's held-out rows or on any dataset version.

        ``rows``: ``"holdout"`` or ``"all"`` (default: holdout on the training version,
        all rows on another). ``cv_folds`` >= 2 adds k-fold cross-validation.
        """
        request = evaluator_pb2.EvaluateRequest(
            model_name=name,
            model_version=version,
            alias=alias,
            dataset_version_id=dataset_version_id,
            rows=rows,
            cv_folds=cv_folds,
        )
        result: evaluator_pb2.Evaluation = self._t.call("evaluator", self._evaluator().Evaluate, request, timeout)
        return result

    def evaluations(self, name: str, version: int = 0) -> builtins.list[evaluator_pb2.Evaluation]:
        """A model's evaluations (one version's, when given), newest first."""
        request = evaluator_pb2.ListEvaluationsRequest(model_name=name, model_version=version)
        return list(self._t.call("evaluator", self._evaluator().ListEvaluations, request).evaluations)

    def plot(self, evaluation_id: str, name: str) -> bytes:
        """One PNG of an evaluation (``Evaluation.plots`` names them)."""
        request = evaluator_pb2.GetPlotRequest(evaluation_id=evaluation_id, name=name)
        return bytes(self._t.call("evaluator", self._evaluator().GetPlot, request).png)
