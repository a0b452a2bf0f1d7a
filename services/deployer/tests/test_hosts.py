"""The real host (:class:`~lepton_deployer.hosts.TritonClientHost`) maps tritonclient's errors to the deployer's."""

from __future__ import annotations

import pytest

from lepton_deployer.errors import HostError
from lepton_deployer.hosts import TritonClientHost

pytestmark = pytest.mark.timeout(30)
UNREACHABLE = "127.0.0.1:9"  # nothing listens there: every call fails fast


async def test_an_unreachable_triton_is_a_host_error_with_triton_s_status_and_words() -> None:
    host = TritonClientHost(UNREACHABLE)
    try:
        assert host.url == UNREACHABLE
        for call in (host.is_ready("m", "1"), host.unload("m"), host.statistics("m")):
            with pytest.raises(HostError) as err:
                await call
            assert err.value.url == UNREACHABLE and err.value.status == "StatusCode.UNAVAILABLE"
            assert err.value.detail and err.value.message == f"[StatusCode.UNAVAILABLE] {err.value.detail}"
    finally:
        await host.close()
