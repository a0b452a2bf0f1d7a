"""How a handler's failure becomes a status: NATS or JetStream not answering is UNAVAILABLE (the caller
may try again, and the SDK's long waits do), never INTERNAL; a real bug stays INTERNAL with an id."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from nats import errors as nats_errors
from nats.js import errors as js_errors

from lepton_core.rpc import _done, _fail


class Aborted(Exception):
    pass


class Context:
    """What ``_fail`` uses of a servicer context: ``abort`` ends the call with a status."""

    code: grpc.StatusCode | None = None
    details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted


class Call:
    outcome = ""

    async def done(self, outcome: str, detail: str) -> None:
        self.outcome = outcome


async def status_of(exc: BaseException) -> tuple[grpc.StatusCode | None, str, str]:
    context, call = Context(), Call()
    with pytest.raises(Aborted):
        await _fail(context, exc, call)  # type: ignore[arg-type]
    return context.code, context.details, call.outcome


@pytest.mark.parametrize(
    "exc",
    [
        nats_errors.TimeoutError(),
        nats_errors.NoRespondersError(),
        nats_errors.ConnectionClosedError(),
        js_errors.ServiceUnavailableError(code=503, description="JetStream system temporarily unavailable"),
        js_errors.NoStreamResponseError(),  # a write to a stream whose leader is being elected (a cluster)
    ],
)
async def test_a_store_that_does_not_answer_is_unavailable(exc: Any) -> None:
    code, details, outcome = await status_of(exc)
    assert code == grpc.StatusCode.UNAVAILABLE and outcome == "UNAVAILABLE"
    assert "did not answer" in details and "try again" in details and type(exc).__name__ in details


async def test_a_bug_is_still_internal_with_an_error_id() -> None:
    code, details, outcome = await status_of(KeyError("oops"))
    assert code == grpc.StatusCode.INTERNAL and outcome == "INTERNAL" and "error id" not in details
    assert details.startswith("internal error (id ") and "oops" not in details


class Unrecorded(Call):
    """A call whose audit record cannot be stored: the store is down too."""

    async def done(self, outcome: str, detail: str) -> None:
        raise nats_errors.NoRespondersError


async def test_a_failed_call_whose_audit_record_cannot_be_stored_keeps_its_own_status() -> None:
    """Before, the audit write's own exception escaped ``_fail`` and the caller got gRPC's UNKNOWN."""
    context = Context()
    with pytest.raises(Aborted):
        await _fail(context, js_errors.NoStreamResponseError(), Unrecorded())  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.UNAVAILABLE and "try again" in context.details


async def test_a_call_that_succeeded_but_could_not_be_audited_is_not_answered_as_a_success() -> None:
    context = Context()
    with pytest.raises(Aborted):
        await _done(context, Unrecorded())  # type: ignore[arg-type]
    assert context.code == grpc.StatusCode.UNAVAILABLE
    assert "carried out" in context.details and "audit record could not be stored" in context.details
