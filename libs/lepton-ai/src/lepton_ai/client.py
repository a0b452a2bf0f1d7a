"""``la.Client``: the entry point of the SDK."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from lepton_ai._transport import RootCertificates, Transport
from lepton_ai.datasets import Datasets
from lepton_ai.deployments import Deployments
from lepton_ai.events import Events
from lepton_ai.jobs import Jobs
from lepton_ai.monitor import Monitor
from lepton_ai.registry import Models


class Client:
    """A connection to a Lepton platform.

    Args:
        api_key: Your API key; defaults to ``LEPTON_API_KEY``.
        url: The platform's address, ``host:port`` of its data service with the other
            services on the next five ports (what ``make up`` prints), or
            ``grpcs://host:port`` for TLS. Defaults to ``LEPTON_URL``, else the local
            embedded platform at ``127.0.0.1:50051``.
        endpoints: Per-service addresses that override ``url`` (``{"trainer": "h:p"}``).
        root_certificates: The CA the platform's certificate must chain to, as a PEM
            file's path or PEM bytes; defaults to ``LEPTON_TLS_CA_FILE``, else the
            system's roots. Giving one means TLS even at a ``host:port`` url.
        insecure: Allow plaintext to an address beyond this machine (a network you trust);
            defaults to ``LEPTON_INSECURE``. Without it such a client raises
            :class:`~lepton_ai.errors.InvalidArgument`, since the API key would cross the
            network unencrypted; loopback addresses are always allowed.

    A TLS handshake that fails, or a plaintext client at a TLS platform (and the
    reverse), raises :class:`~lepton_ai.errors.Unavailable` naming the address and
    what to check.

    Example:
        >>> import lepton_ai as la
        >>> client = la.Client("your_api_key")
        >>> dataset = client.datasets.upload("sales.csv")
    """

    def __init__(
        self,
        api_key: str | None = None,
        url: str | None = None,
        *,
        endpoints: Mapping[str, str] | None = None,
        root_certificates: RootCertificates | None = None,
        insecure: bool | None = None,
    ) -> None:
        self._transport = Transport(api_key, url, endpoints, root_certificates, insecure)
        self.datasets = Datasets(self._transport)
        self.jobs = Jobs(self._transport)
        self.models = Models(self._transport)
        self.deployments = Deployments(self._transport)
        self.monitor = Monitor(self._transport)
        self.events = Events(self._transport)

    @property
    def endpoints(self) -> dict[str, str]:
        """The address of each service this client talks to."""
        return dict(self._transport.endpoints)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
