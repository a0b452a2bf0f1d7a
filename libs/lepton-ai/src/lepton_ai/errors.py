"""The SDK's exceptions: one tree, each carrying the platform's gRPC status.

``LeptonError`` is the base. Every error from the platform is one of the classes
below, chosen by its gRPC status code; the message is the platform's own (it starts
with the request field at fault, e.g. ``params.alpha: ...``).
"""

from __future__ import annotations

import grpc


class LeptonError(Exception):
    """Base of every error the SDK raises.

    Attributes:
        message: What went wrong, as the platform phrased it.
        field: The request field at fault, when the message names one.
        code: The gRPC status code name (``"INVALID_ARGUMENT"``), or ``""``.
    """

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        head, sep, _ = message.partition(": ")
        self.field = head if sep and " " not in head else None


class InvalidArgument(LeptonError):
    """The request is wrong: a bad value, a bad file, an unknown name."""


class NotFound(LeptonError):
    """The named thing does not exist for your API key's tenant."""


class Unauthenticated(LeptonError):
    """No API key, or a key the platform does not know."""


class PermissionDenied(LeptonError):
    """The key may not do this."""


class Conflict(LeptonError):
    """A concurrent change won; read again and retry."""


class Unavailable(LeptonError):
    """The platform could not be reached, or a service behind it is down."""


class FailedPrecondition(LeptonError):
    """The platform is not in a state to do this yet."""


class DataLoss(LeptonError):
    """Stored bytes failed their digest check."""


class ResourceExhausted(LeptonError):
    """A limit of your tenant's plan would be passed; nothing was stored.

    ``field`` names the limit (``datasets``, ``stored_bytes``, ...); the message says what you use
    of it, its value and your plan: ``datasets: 10 of 10 on plan trial; ...``. ``client.usage()``
    shows every limit; an operator changes the plan (``client.plans.set``). The gateway's rate
    limits refuse with it too.
    """


_BY_CODE: dict[grpc.StatusCode, type[LeptonError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.DATA_LOSS: DataLoss,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def from_rpc_error(exc: grpc.RpcError, address: str, *, tls: bool = False, trusted: str = "") -> LeptonError:
    """The SDK exception for a failed call to ``address``.

    Args:
        exc: The failed call.
        address: The address the call went to, as the user would write it.
        tls: Whether the call used TLS.
        trusted: Which CA certificates the client trusted, for TLS failures.
    """
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or code.name
    if code == grpc.StatusCode.UNAVAILABLE and details.startswith(_CONNECTION_FAILURES):
        details = _unreachable(address, details, tls, trusted)
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        details = f"{details} (platform at {address}). Pass api_key= or set LEPTON_API_KEY"
    return _BY_CODE.get(code, LeptonError)(details, code=code.name)


# How gRPC itself says a connection did not come about or broke; an UNAVAILABLE whose message
# starts otherwise was sent by a service (about a service behind it) and keeps its words.
_CONNECTION_FAILURES = (
    "failed to connect",
    "DNS resolution failed",
    "Socket closed",
    "Connection reset",
    "recvmsg:",
    "Broken pipe",
    "Connection refused",
    "connections to all backends failing",
    "Endpoint read failed",
    "keepalive watchdog timeout",
    "GOAWAY received",
    "UNAVAILABLE",
)


def _unreachable(address: str, details: str, tls: bool, trusted: str) -> str:
    """What to check when no connection to ``address`` came about, from gRPC's reason.

    Only a failure to connect (gRPC's own "failed to connect ...") gets TLS advice: an
    UNAVAILABLE a service sent back is about a service behind it, not this client's TLS.
    """
    what = f"cannot reach the Lepton platform at {address} ({details})."
    if details.startswith("failed to connect"):
        if tls and "WRONG_VERSION_NUMBER" in details:
            return (
                f"{what} It does not speak TLS: if the platform serves plaintext, use host:port instead of "
                "grpcs://, and no CA file (root_certificates= or LEPTON_TLS_CA_FILE)"
            )
        if tls and "Hostname Verification" in details:
            return f"{what} Its TLS certificate does not name that host: connect by a name or IP its certificate lists"
        if tls and ("CERTIFICATE_VERIFY_FAILED" in details or "handshake" in details.lower()):
            why = (
                "its certificate is not signed by a CA this client trusts"
                if "CERTIFICATE_VERIFY_FAILED" in details
                else "check that its certificate is signed by a CA this client trusts"
            )
            return (
                f"{what} The TLS handshake failed: {why} ({trusted or 'the system roots'}). Pass "
                "root_certificates= or set LEPTON_TLS_CA_FILE to the platform's CA file; if the platform "
                "serves plaintext, use host:port instead of grpcs://"
            )
        if not tls and "Socket closed" in details:
            return (
                f"{what} It closed the connection, as a TLS server does to a plaintext client: if the platform "
                f"serves TLS, use grpcs://{address} (with root_certificates= or LEPTON_TLS_CA_FILE for a private CA)"
            )
    return f"{what} Start it with `make up` or `lepton up`, or point LEPTON_URL at it"
