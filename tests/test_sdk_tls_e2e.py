"""The SDK and CLI against a platform that serves TLS, with services calling each other over TLS.

Starts the embedded platform with ``tls=True`` and only the services these calls need (no
Triton, no deployer or monitor): a fresh CA, a certificate for 127.0.0.1, real processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

import lepton_ai as la
from lepton_core.tls import server_credentials, write_self_signed
from lepton_platform.demo import write_diabetes_csv
from lepton_platform.embedded import EmbeddedPlatform
from lepton_platform.processes import free_port
from lepton_platform.testing import lepton_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def tls_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPlatform]:
    p = EmbeddedPlatform(
        tmp_path_factory.mktemp("tls-platform"),
        api_key=secrets.token_urlsafe(16),
        services=("data", "trainer", "evaluator", "registry"),
        triton=False,
        tls=True,
        # No deployer here: its lineage part is a warning, on an address where nothing listens.
        settings={"registry": {"deployer_url": f"127.0.0.1:{free_port()}"}},
    )
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(autouse=True)
def _no_ca_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEPTON_TLS_CA_FILE", raising=False)


def _port(platform: EmbeddedPlatform) -> int:
    assert platform.base_port is not None
    return platform.base_port


def _flat(text: str) -> str:
    """Rich wraps the CLI's messages at the terminal width; phrases are checked unwrapped."""
    return " ".join(text.split())


def test_a_client_with_the_ca_uploads_and_lists_over_tls(tls_platform: EmbeddedPlatform, tmp_path: Path) -> None:
    assert tls_platform.url.startswith("grpcs://") and tls_platform.ca_file is not None
    csv = write_diabetes_csv(tmp_path / "tls-diabetes.csv")
    with la.Client(tls_platform.api_key, tls_platform.url, root_certificates=tls_platform.ca_file) as client:
        dataset = client.datasets.upload(csv, "tls-diabetes", progress=False)
        assert dataset.row_count == 442
        assert "tls-diabetes" in [d.name for d in client.datasets.list()]
    # The PEM bytes do as well as the path.
    pem = tls_platform.ca_file.read_bytes()
    with la.Client(tls_platform.api_key, tls_platform.url, root_certificates=pem) as client:
        assert client.datasets.get("tls-diabetes").version_id == dataset.version_id


def test_the_ca_can_come_from_the_environment_and_means_tls(
    tls_platform: EmbeddedPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_platform.ca_file is not None
    monkeypatch.setenv("LEPTON_TLS_CA_FILE", str(tls_platform.ca_file))
    with la.Client(tls_platform.api_key, tls_platform.url) as client:
        client.datasets.list()
    # host:port with a CA to trust is TLS too, as it is for the services' own calls.
    with la.Client(tls_platform.api_key, f"127.0.0.1:{_port(tls_platform)}") as client:
        client.datasets.list()


def test_without_the_ca_the_error_names_the_address_and_what_to_check(
    tls_platform: EmbeddedPlatform, tmp_path: Path
) -> None:
    address = f"grpcs://127.0.0.1:{_port(tls_platform)}"
    with pytest.raises(la.Unavailable) as system_roots:
        la.Client(tls_platform.api_key, tls_platform.url).datasets.list()
    message = system_roots.value.message
    assert f"cannot reach the Lepton platform at {address}" in message
    assert "TLS handshake failed" in message and "not signed by a CA this client trusts (the system roots)" in message
    assert "root_certificates=" in message and "LEPTON_TLS_CA_FILE" in message

    other_ca = write_self_signed(tmp_path / "other").ca_file
    with pytest.raises(la.Unavailable) as wrong_ca:
        la.Client(tls_platform.api_key, tls_platform.url, root_certificates=other_ca).datasets.list()
    assert f"(root_certificates={other_ca})" in wrong_ca.value.message

    with pytest.raises(la.InvalidArgument, match="root_certificates: cannot read the CA file"):
        la.Client(tls_platform.api_key, tls_platform.url, root_certificates=tmp_path / "missing.pem")


def test_a_plaintext_client_at_a_tls_platform_is_told_to_use_grpcs(tls_platform: EmbeddedPlatform) -> None:
    address = f"127.0.0.1:{_port(tls_platform)}"
    with pytest.raises(la.Unavailable) as plaintext:
        la.Client(tls_platform.api_key, address).datasets.list()
    message = plaintext.value.message
    assert f"cannot reach the Lepton platform at {address}" in message
    assert f"if the platform serves TLS, use grpcs://{address}" in message


def test_a_tls_client_at_a_plaintext_platform_is_told_to_drop_grpcs(tls_platform: EmbeddedPlatform) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with pytest.raises(la.Unavailable) as mismatch:
            la.Client("k", f"grpcs://127.0.0.1:{port}", root_certificates=tls_platform.ca_file).datasets.list()
    finally:
        server.stop(0)
    message = mismatch.value.message
    assert f"at grpcs://127.0.0.1:{port}" in message
    assert "does not speak TLS" in message and "use host:port instead of grpcs://" in message


def test_a_certificate_for_another_host_is_named_as_such(tmp_path: Path) -> None:
    files = write_self_signed(tmp_path / "tls", hosts=("lepton.example",))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(files.cert_file, files.key_file))
    server.start()
    try:
        with pytest.raises(la.Unavailable) as wrong_host:
            la.Client("k", f"grpcs://127.0.0.1:{port}", root_certificates=files.ca_file).datasets.list()
    finally:
        server.stop(0)
    assert "Its TLS certificate does not name that host" in wrong_host.value.message


def test_calls_between_services_go_over_tls(tls_platform: EmbeddedPlatform, tmp_path: Path) -> None:
    csv = write_diabetes_csv(tmp_path / "tls-train.csv")
    with la.Client(tls_platform.api_key, tls_platform.url, root_certificates=tls_platform.ca_file) as client:
        dataset = client.datasets.upload(csv, "tls-train", progress=False)
        # SubmitTraining: the trainer reads the dataset version from the data service.
        model = la.models.LinearRegression().fit(dataset, model_name="tls-model", progress=False, timeout=300)
        assert model.version >= 1
        # Lineage: the registry asks the data service, the trainer and the evaluator (which asks
        # the registry back); a peer it could not reach would be a warning.
        graph = client.models.lineage("tls-model", model.version)
    assert [d.version_id for d in graph.datasets] == [dataset.version_id]
    assert graph.job.job_id == model.job_id and graph.job.state == "succeeded"
    assert len(graph.evaluations) >= 1
    assert [w.split(":")[0] for w in graph.warnings] == ["deployments"], graph.warnings


def test_the_cli_takes_the_ca_from_the_environment_or_an_option(tls_platform: EmbeddedPlatform) -> None:
    listed = lepton_cli(tls_platform, "--output", "json", "data", "list", timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)

    cli = Path(sys.executable).parent / "lepton"
    env = {k: v for k, v in os.environ.items() if k != "LEPTON_TLS_CA_FILE"}
    env.update(LEPTON_URL=tls_platform.url, LEPTON_API_KEY=tls_platform.api_key)
    refused = subprocess.run([str(cli), "data", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 6, refused.stderr
    assert "TLS handshake failed" in _flat(refused.stderr) and "LEPTON_TLS_CA_FILE" in refused.stderr

    option = [str(cli), "--ca-file", str(tls_platform.ca_file), "data", "list"]
    accepted = subprocess.run(option, capture_output=True, text=True, env=env, timeout=120)
    assert accepted.returncode == 0, accepted.stderr


def test_the_security_doc_example_runs(tls_platform: EmbeddedPlatform) -> None:
    path = DOCS / "security.md"
    (block,) = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    out = io.StringIO()
    names = {"URL": tls_platform.url, "API_KEY": tls_platform.api_key, "CA_FILE": str(tls_platform.ca_file)}
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(path), "exec"), names)
    printed = out.getvalue()
    assert "uploaded over TLS: tls-hello 3 rows" in printed, printed
    assert "listed: True" in printed and "without the CA: True" in printed, printed
