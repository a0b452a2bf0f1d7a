"""``la.Client`` against the in-process fake: where calls go, what they carry, how failures read."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import lepton_ai as la
from lepton_ai import errors

from .fakes import API_KEY, FakePlatform, sales_frame

pytestmark = pytest.mark.timeout(30)

#: Each gRPC status the platform sends, the SDK class it becomes.
STATUSES: list[tuple[grpc.StatusCode, type[la.LeptonError]]] = [
    (grpc.StatusCode.INVALID_ARGUMENT, la.InvalidArgument),
    (grpc.StatusCode.NOT_FOUND, la.NotFound),
    (grpc.StatusCode.UNAUTHENTICATED, la.Unauthenticated),
    (grpc.StatusCode.PERMISSION_DENIED, la.PermissionDenied),
    (grpc.StatusCode.ABORTED, la.Conflict),
    (grpc.StatusCode.ALREADY_EXISTS, la.Conflict),
    (grpc.StatusCode.FAILED_PRECONDITION, la.FailedPrecondition),
    (grpc.StatusCode.DATA_LOSS, la.DataLoss),
    (grpc.StatusCode.UNAVAILABLE, la.Unavailable),
    (grpc.StatusCode.DEADLINE_EXCEEDED, la.Unavailable),
    (grpc.StatusCode.INTERNAL, la.LeptonError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, la.ResourceExhausted),
]


def _exercise_every_service(client: la.Client, fake: FakePlatform) -> None:
    """One call (unary, client-streaming and server-streaming among them) to each service."""
    fake.registry.add_version("m", artifact=b"x" * 200_000)
    dataset = client.datasets.upload(sales_frame(), "sales", progress=False)  # data, client stream
    dataset.to_polars()  # data, server stream
    client.jobs.algorithms()  # trainer
    client.models.evaluate("m")  # evaluator
    client.models.download("m")  # registry, server stream
    client.deployments.list()  # deployer
    client.monitor.send_labels("d", {"r1": 1.0})  # monitor


def test_each_namespace_calls_its_own_service_on_consecutive_ports(client: la.Client, fake: FakePlatform) -> None:
    base = fake.ports["data"]
    assert client.endpoints == {
        name: f"127.0.0.1:{base + i}"
        for i, name in enumerate(("data", "trainer", "evaluator", "registry", "deployer", "monitor", "gateway"))
    }
    _exercise_every_service(client, fake)
    # A call sent to the wrong port would have been UNIMPLEMENTED there; the fake says where each arrived.
    assert [(c.service, c.method) for c in fake.calls] == [
        ("data", "UploadDataset"),
        ("data", "ReadDataset"),
        ("trainer", "ListAlgorithms"),
        ("evaluator", "Evaluate"),
        ("registry", "DownloadArtifact"),
        ("registry", "GetArtifactPublicKey"),  # to verify the artifact's signature, once per client
        ("deployer", "ListDeployments"),
        ("monitor", "SendLabels"),
    ]


def test_the_api_key_travels_as_bearer_metadata_on_every_call_and_nowhere_else(
    client: la.Client, fake: FakePlatform
) -> None:
    _exercise_every_service(client, fake)
    with client.events.subscribe("dataset.version.created", limit=1) as events:
        client.datasets.upload(sales_frame(3), "other", progress=False)
        next(events)
    assert fake.methods()[-2:] == ["Subscribe", "UploadDataset"] and len(fake.calls) == 10
    for call in fake.calls:
        assert [v for k, v in call.metadata if k == "authorization"] == [f"Bearer {API_KEY}"], call.method
        assert API_KEY not in call.path
        assert all(API_KEY not in v for k, v in call.metadata if k != "authorization"), call.method
    assert all(API_KEY not in address for address in client.endpoints.values())


def test_the_key_and_url_default_to_the_environment(fake: FakePlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_API_KEY", API_KEY)
    monkeypatch.setenv("LEPTON_URL", fake.url)
    with la.Client() as client:
        assert client.datasets.list() == []
    (call,) = fake.calls
    assert call.header("authorization") == f"Bearer {API_KEY}"


def test_an_explicit_key_wins_over_the_environment(fake: FakePlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_API_KEY", "sk-from-the-environment")
    fake.api_keys["sk-explicit"] = "tenant-b"
    with la.Client("sk-explicit", fake.url) as client:
        client.models.list()
    assert fake.calls[0].header("authorization") == "Bearer sk-explicit"


def test_without_a_key_no_authorization_is_sent_and_the_error_says_how_to_give_one(fake: FakePlatform) -> None:
    with la.Client(None, fake.url) as client, pytest.raises(la.Unauthenticated) as caught:
        client.datasets.list()
    assert fake.calls[0].header("authorization") is None
    err = caught.value
    assert err.code == "UNAUTHENTICATED" and err.field == "authorization"
    assert err.message == (
        f"authorization: no API key (platform at 127.0.0.1:{fake.ports['data']}). Pass api_key= or set LEPTON_API_KEY"
    )


def test_a_wrong_key_is_unauthenticated_and_never_echoed(fake: FakePlatform) -> None:
    wrong = "sk-wrong-5e1d0b77"
    with la.Client(wrong, fake.url) as client, pytest.raises(la.Unauthenticated) as caught:
        client.models.get("m")
    assert wrong not in str(caught.value) and wrong not in repr(caught.value)
    assert f"platform at 127.0.0.1:{fake.ports['registry']}" in caught.value.message


@pytest.mark.parametrize(("code", "cls"), STATUSES, ids=[code.name for code, _ in STATUSES])
def test_each_status_becomes_its_error_class_with_code_and_field(
    client: la.Client, fake: FakePlatform, code: grpc.StatusCode, cls: type[la.LeptonError]
) -> None:
    fake.fail("GetModel", code, "params.alpha: must be at least 0")
    with pytest.raises(la.LeptonError) as caught:
        client.models.get("m")
    err = caught.value
    assert type(err) is cls
    assert isinstance(err, errors.LeptonError) and err.code == code.name
    assert err.message.startswith("params.alpha: must be at least 0")
    assert err.field == "params.alpha"
    assert str(err) == err.message


@pytest.mark.parametrize(
    ("details", "field", "message"),
    [
        ("config.max_batch_size: must be positive", "config.max_batch_size", "config.max_batch_size: must be positive"),
        ("the model is busy: try later", None, "the model is busy: try later"),
        ("no colon here", None, "no colon here"),
        ("", None, "NOT_FOUND"),  # no details: the code's name, not an empty message
    ],
)
def test_the_field_is_the_message_head_only_when_it_names_one(
    client: la.Client, fake: FakePlatform, details: str, field: str | None, message: str
) -> None:
    fake.fail("GetDeployment", grpc.StatusCode.NOT_FOUND, details)
    with pytest.raises(la.NotFound) as caught:
        client.deployments.get("d")
    assert (caught.value.field, caught.value.message) == (field, message)


def test_a_platform_that_is_not_there_is_unavailable_naming_the_address(fake: FakePlatform) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with la.Client(API_KEY, f"127.0.0.1:{port}") as client, pytest.raises(la.Unavailable) as caught:
        client.datasets.list()
    assert time.monotonic() - started < 10  # fails fast, does not wait out the 60 s deadline
    message = caught.value.message
    assert message.startswith(f"cannot reach the Lepton platform at 127.0.0.1:{port} (")
    assert message.endswith("Start it with `make up` or `lepton up`, or point LEPTON_URL at it")
    assert caught.value.code == "UNAVAILABLE"


def test_an_unavailable_the_platform_sent_keeps_its_own_message(client: la.Client, fake: FakePlatform) -> None:
    fake.fail("SubmitTraining", grpc.StatusCode.UNAVAILABLE, "dataset_version_id: the data service did not answer")
    dataset = client.datasets.upload(sales_frame(), "sales", progress=False)
    with pytest.raises(la.Unavailable) as caught:
        la.models.Ridge().fit(dataset, progress=False)
    assert caught.value.message.startswith("dataset_version_id: the data service did not answer")
    assert "make up" not in caught.value.message


def test_unary_calls_carry_a_deadline_and_long_calls_a_longer_one(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("m")
    client.datasets.list()
    client.datasets.upload(sales_frame(), "sales", progress=False)
    client.models.evaluate("m", timeout=7.5)
    client.models.download("m")
    timeouts = {c.method: c.timeout for c in fake.calls}
    # grpc-timeout travels in coarse units: the server sees the deadline to within about 1 %.
    assert timeouts["ListDatasets"] == pytest.approx(60, rel=0.02)
    assert timeouts["UploadDataset"] == pytest.approx(3600, rel=0.01)
    assert timeouts["Evaluate"] == pytest.approx(7.5, rel=0.05)
    assert timeouts["DownloadArtifact"] == pytest.approx(600, rel=0.01)


def test_a_call_past_its_timeout_is_unavailable_deadline_exceeded(client: la.Client, fake: FakePlatform) -> None:
    fake.registry.add_version("m")
    fake.evaluator.hold = True
    started = time.monotonic()
    with pytest.raises(la.Unavailable) as caught:
        client.models.evaluate("m", timeout=0.3)
    assert 0.25 < time.monotonic() - started < 5
    assert caught.value.code == "DEADLINE_EXCEEDED"


def test_a_failed_call_is_raised_at_once_not_retried(client: la.Client, fake: FakePlatform) -> None:
    fake.fail("ListModels", grpc.StatusCode.UNAVAILABLE, "registry restarting", times=1)
    with pytest.raises(la.Unavailable):
        client.models.list()
    assert fake.methods() == ["ListModels"]
    assert client.models.list() == []  # the fault was for one call: the next goes through
    assert fake.methods() == ["ListModels", "ListModels"]


def test_endpoints_override_the_url_for_the_services_named(fake: FakePlatform) -> None:
    other = FakePlatform().start()
    try:
        other.registry.add_version("only-there")
        registry = f"127.0.0.1:{other.ports['registry']}"
        with la.Client(API_KEY, fake.url, endpoints={"registry": registry}) as client:
            assert client.endpoints["registry"] == registry
            assert [m.name for m in client.models.list()] == ["only-there"]
            client.datasets.list()
        assert other.methods() == ["ListModels"]
        assert fake.methods() == ["ListDatasets"]
    finally:
        other.stop()


def test_an_endpoint_for_a_service_that_does_not_exist_is_refused(fake: FakePlatform) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        la.Client(API_KEY, fake.url, endpoints={"registy": "127.0.0.1:1"})
    assert caught.value.field == "endpoints"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:50051", "unix:///tmp/lepton.sock"])
def test_an_unsupported_url_scheme_is_invalid_argument_before_any_call(url: str) -> None:
    with pytest.raises(la.InvalidArgument) as caught:
        la.Client(API_KEY, url)
    assert caught.value.field == "url"


def test_root_certificates_that_are_not_pem_are_refused_naming_the_argument(tmp_path: Path) -> None:
    with pytest.raises(la.InvalidArgument) as as_bytes:
        la.Client(API_KEY, "127.0.0.1:1", root_certificates=b"not a certificate")
    assert as_bytes.value.field == "root_certificates"
    missing = tmp_path / "missing.pem"
    with pytest.raises(la.InvalidArgument, match="cannot read the CA file") as as_path:
        la.Client(API_KEY, "127.0.0.1:1", root_certificates=missing)
    assert as_path.value.field == "root_certificates"


def test_the_callers_trace_travels_as_traceparent(client: la.Client, fake: FakePlatform) -> None:
    span = NonRecordingSpan(
        SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False, TraceFlags(TraceFlags.SAMPLED))
    )
    with trace.use_span(span):
        client.datasets.list()
    client.datasets.list()
    inside, outside = fake.calls
    assert inside.header("traceparent") == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert outside.header("traceparent") is None


def test_a_closed_client_opens_its_channels_again_on_the_next_call(client: la.Client, fake: FakePlatform) -> None:
    assert client.datasets.list() == []
    client.close()
    assert client.datasets.list() == []
    assert fake.methods() == ["ListDatasets", "ListDatasets"]


def test_tls_with_the_platforms_ca_and_a_clear_error_without_it(tmp_path: Path) -> None:
    from lepton_core.tls import write_self_signed  # lepton_core: the SDK's own dependency

    files = write_self_signed(tmp_path / "tls")
    fake = FakePlatform(tls=files).start()
    try:
        assert fake.url.startswith("grpcs://")
        with la.Client(API_KEY, fake.url, root_certificates=files.ca_file) as client:
            assert client.datasets.list() == []
        # A CA to trust means TLS at a plain host:port too.
        plain = fake.url.removeprefix("grpcs://")
        with la.Client(API_KEY, plain, root_certificates=files.ca_file.read_bytes()) as client:
            assert client.models.list() == []
        assert [c.header("authorization") for c in fake.calls] == [f"Bearer {API_KEY}"] * 2
        with la.Client(API_KEY, fake.url) as client, pytest.raises(la.Unavailable) as caught:
            client.datasets.list()
        assert "TLS handshake failed" in caught.value.message
        assert "root_certificates=" in caught.value.message
        assert len(fake.calls) == 2  # the handshake failed: no call arrived, no key was sent
    finally:
        fake.stop()
